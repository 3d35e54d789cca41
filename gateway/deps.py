"""FastAPI dependencies: the caller's identity and scope, rate limit, and connections."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from core.adapters.pgvector import PgVectorStore
from core.adapters.session_store import MongoSessionStore
from core.adapters.task_store import TaskStore
from core.adapters.triton_embedder import TritonEmbedder
from core.config import Settings
from gateway.experiments import Experiments
from gateway.problems import Problem
from gateway.resources import Resources
from gateway.security import Principal, SharedRateLimiter, retry_after_header
from producers.publisher import Publisher

bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <API key>`")
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The API key.")


def resources(request: Request) -> Resources:
    return request.app.state.resources  # type: ignore[no-any-return]


def settings(request: Request) -> Settings:
    return resources(request).settings


def require(scope: str | None) -> Callable[..., Awaitable[Principal]]:
    """A valid key with `scope` (None: any valid key)."""
    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        header_key: Annotated[str | None, Depends(api_key_header)],
    ) -> Principal:
        key = credentials.credentials if credentials else header_key
        if not key:
            raise Problem(401, "an API key is required: Authorization: Bearer <key> or X-API-Key",
                          headers={"WWW-Authenticate": "Bearer"})
        res = resources(request)
        principal = res.keyring.authenticate(key)
        if principal is None:
            raise Problem(401, "the API key is not valid", headers={"WWW-Authenticate": "Bearer"})
        if scope is not None and not principal.allows(scope):
            raise Problem(403, f"this API key lacks the '{scope}' scope")
        wait = await _acquire(res, principal)
        if wait > 0:
            raise Problem(429, "rate limit exceeded for this API key", headers=retry_after_header(wait))
        return principal

    return dependency


async def _acquire(res: Resources, principal: Principal) -> float:
    limiter = res.limiter
    if isinstance(limiter, SharedRateLimiter):
        return await limiter.acquire(principal.key_id, principal.rate_per_s, principal.burst)
    return limiter.acquire(principal.key_id, principal.rate_per_s, principal.burst)


async def publisher(request: Request) -> Publisher:
    return await resources(request).publisher()


async def store(request: Request) -> PgVectorStore:
    return await resources(request).store()


async def embedder(request: Request) -> TritonEmbedder:
    return await resources(request).embedder()


async def tasks(request: Request) -> TaskStore:
    return await resources(request).tasks()


async def experiments(request: Request) -> Experiments:
    return await resources(request).experiments()


async def sessions(request: Request) -> MongoSessionStore:
    return await resources(request).sessions()


AnyKey = Annotated[Principal, Depends(require(None))]
Publishing = Annotated[Principal, Depends(require("publish"))]
Searching = Annotated[Principal, Depends(require("search"))]
Admin = Annotated[Principal, Depends(require("admin"))]
Operator = Annotated[Principal, Depends(require("operator"))]
PublisherDep = Annotated[Publisher, Depends(publisher)]
StoreDep = Annotated[PgVectorStore, Depends(store)]
EmbedderDep = Annotated[TritonEmbedder, Depends(embedder)]
TasksDep = Annotated[TaskStore, Depends(tasks)]
SettingsDep = Annotated[Settings, Depends(settings)]
ExperimentsDep = Annotated[Experiments, Depends(experiments)]
SessionsDep = Annotated[MongoSessionStore, Depends(sessions)]
