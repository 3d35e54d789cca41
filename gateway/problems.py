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


LOCATIONS = ("body", "query", "path", "header", "cookie")
# Request bodies that are one of two shapes: the batch's key says which one a request tries.
BATCH_SHAPES = {"ContentBatch": ("items", "ContentItem", "one item"),
                "SessionEvents": ("events", "SessionEventIn", "one event")}
UNION_MEMBERS = {name for batch, (_, single, _) in BATCH_SHAPES.items() for name in (batch, single)}


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    """The field's dotted path: the location (body, query, ...) only when it comes first, so a
    body field named `query` stays `query`; union members' tags (e.g. `ContentItem`) dropped."""
    parts = list(loc)
    if parts and parts[0] in LOCATIONS:
        parts = parts[1:]
    if parts and parts[0] in UNION_MEMBERS:
        parts = parts[1:]
    names = [str(p) for p in parts if not (isinstance(p, str) and "[" in p)]  # function-after[...]
    return ".".join(names) or "(body)"


def _one_shape(errors: list[dict[str, Any]], body: Any) -> tuple[list[dict[str, Any]], str]:
    """The errors of the one shape a union body was trying (a batch when it has the batch's key,
    else a single object), and a note saying which shape it was read as."""
    tags = {e["loc"][1] for e in errors if len(e["loc"]) > 1 and e["loc"][0] == "body"}
    for batch, (key, single, single_name) in BATCH_SHAPES.items():
        if batch in tags or single in tags:
            is_batch = isinstance(body, dict) and key in body
            chosen = batch if is_batch else single
            mine = [e for e in errors if len(e["loc"]) < 2 or e["loc"][1] == chosen] or errors
            shape = f'a batch, {{"{key}": [...]}}' if is_batch else \
                f'{single_name}; send {{"{key}": [...]}} for a batch'
            return mine, f"read as {shape}"
    return errors, ""


def _reason(error: dict[str, Any]) -> str:
    kind = error.get("type")
    if kind == "json_invalid":
        cause = error.get("ctx", {}).get("error")
        return "the body must be JSON (Content-Type: application/json)" + (f": {cause}" if cause else "")
    if kind == "missing":
        return "is required"
    return str(error["msg"])


def validation_problem(errors: list[dict[str, Any]], body: Any = None) -> tuple[str, list[dict[str, Any]]]:
    """(detail, errors) of a 422: each error with its field and what to fix."""
    errors, note = _one_shape(errors, body)
    more = len(errors) - MAX_ERRORS
    errors = errors[:MAX_ERRORS]
    listed = [{"field": "(body)" if e.get("type") == "json_invalid" else _field(e["loc"]),
               "reason": _reason(e)} for e in errors]
    detail = "; ".join(f"{e['field']}: {e['reason']}" for e in listed)
    if more > 0:
        detail += f"; and {more} more errors"
    return (f"{detail} ({note})" if note else detail), listed


# Batch bodies and their key: too many entries is a 413 naming the limit, before (and instead
# of) listing what is wrong with each entry.
BATCH_PATHS = {"/v1/content": "items", "/v1/clicks": "events"}
MAX_ERRORS = 20


def batch_too_large(key: str, count: int, limit: int) -> Problem:
    return Problem(413, f"{key}: at most {limit} {key} per request (FLYWHEEL_GATEWAY_MAX_BATCH), got "
                        f"{count}; send them in batches of {limit}",
                   errors=[{"field": key, "reason": f"{count} {key}; at most {limit}"}])


def oversized_batch(request: Request, body: Any) -> JSONResponse | None:
    key = BATCH_PATHS.get(request.url.path)
    if key is None or not isinstance(body, dict) or not isinstance(body.get(key), list):
        return None
    limit = request.app.state.resources.settings.gateway_max_batch
    count = len(body[key])
    if count <= limit:
        return None
    problem = batch_too_large(key, count, limit)
    return problem_response(413, problem.detail, request.url.path, errors=problem.errors)


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.detail, request.url.path, title=exc.title,
                                errors=exc.errors, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        too_many = oversized_batch(request, exc.body)
        if too_many is not None:
            return too_many
        detail, errors = validation_problem(list(exc.errors()), exc.body)
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
