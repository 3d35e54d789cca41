"""The FastAPI gateway: REST for clients. Run with `uvicorn gateway.main:app`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from prometheus_fastapi_instrumentator import Instrumentator

from core.config import Settings, get_settings
from core.logging import configure_logging
from core.telemetry import configure_tracing
from gateway import openapi, problems
from gateway.body_limit import BodySizeLimit
from gateway.resources import Resources
from gateway.routes import (
    admin,
    clicks,
    console,
    content,
    datasets,
    docs,
    embeddings,
    events,
    health,
    identity,
    metrics_history,
    model_versions,
    search,
    sources,
    tasks,
    training,
)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging("flywheel-gateway")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.resources = Resources(settings)
        watcher = asyncio.create_task(app.state.resources.keyring.watch())
        yield
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await app.state.resources.close()

    app = FastAPI(
        title="Embedding Flywheel gateway",
        version="0.1.0",
        description=(
            "Publish content and clicks, search, and steer training and rollouts. "
            "Authenticate with `Authorization: Bearer <API key>` (or `X-API-Key`). "
            "Errors are application/problem+json. The events are described at /asyncapi.json."
        ),
        lifespan=lifespan,
        # Served by gateway.routes.docs from a package's assets: no CDN.
        docs_url=None, redoc_url=None,
    )
    problems.install(app)
    for router in (health.router, content.router, events.router, search.router, embeddings.router,
                   clicks.router, training.router, tasks.router, model_versions.router, docs.router,
                   admin.router, sources.router, console.router, datasets.router, metrics_history.router,
                   identity.router):
        app.include_router(router)
    openapi.install(app, settings)
    app.add_middleware(BodySizeLimit, max_bytes=settings.gateway_max_body_bytes)
    Instrumentator(excluded_handlers=["/metrics", "/healthz"]).instrument(app)
    # Spans per request; the publisher carries their context into Kafka headers.
    FastAPIInstrumentor.instrument_app(app, tracer_provider=configure_tracing("flywheel-gateway"),
                                       excluded_urls="healthz,readyz,metrics")
    return app


app = create_app()
