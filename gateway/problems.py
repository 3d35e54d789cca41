"""Errors as RFC 9457 problem details (application/problem+json), naming field and reason."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import psycopg
import pydantic
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.adapters.triton_embedder import EmbedderUnavailable
from producers.publisher import PublisherError
from schemas.codec import EventValidationError

PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    def __init__(
        self, status: int, detail: str, *, errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None, title: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors
        self.headers = headers
        self.title = title or HTTPStatus(status).phrase


def problem_response(
    status: int, detail: str, instance: str, *, title: str | None = None,
    errors: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank", "title": title or HTTPStatus(status).phrase,
        "status": status, "detail": detail, "instance": instance,
    }
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "(body)"


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.detail, request.url.path, title=exc.title,
                                errors=exc.errors, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": _field(e["loc"]), "reason": e["msg"]} for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
        return problem_response(422, detail, request.url.path, errors=errors)

    @app.exception_handler(pydantic.ValidationError)
    async def on_model_validation(request: Request, exc: pydantic.ValidationError) -> JSONResponse:
        errors = [{"field": _field(e["loc"]), "reason": e["msg"]} for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
        return problem_response(422, detail, request.url.path, errors=errors)

    @app.exception_handler(EventValidationError)
    async def on_event_validation(request: Request, exc: EventValidationError) -> JSONResponse:
        errors = [{"field": e.loc, "reason": e.msg} for e in exc.errors]
        return problem_response(422, str(exc), request.url.path, errors=errors)

    @app.exception_handler(PublisherError)
    async def on_publisher_error(request: Request, exc: PublisherError) -> JSONResponse:
        # Kafka did not acknowledge the events: the client may send them again (upserts are
        # guarded by the item's version, so a repeat changes nothing).
        return problem_response(503, f"Kafka is unavailable: {exc}",
                                request.url.path, headers={"Retry-After": "5"})

    @app.exception_handler(psycopg.errors.QueryCanceled)
    async def on_statement_timeout(request: Request, exc: psycopg.errors.QueryCanceled) -> JSONResponse:
        # FLYWHEEL_POSTGRES_STATEMENT_TIMEOUT_MS: a statement (or its wait for a lock) ran too long.
        return problem_response(503, f"PostgreSQL did not finish in time: {str(exc).strip()}",
                                request.url.path, headers={"Retry-After": "5"})

    @app.exception_handler(EmbedderUnavailable)
    async def on_embedder_unavailable(request: Request, exc: EmbedderUnavailable) -> JSONResponse:
        # Triton is down, or did not answer within the query deadline: fail fast, say why.
        return problem_response(503, f"Triton is unavailable: {exc}", request.url.path,
                                headers={"Retry-After": "5"})

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(exc.status_code, str(exc.detail), request.url.path,
                                headers=getattr(exc, "headers", None))
