"""The FastAPI gateway: REST for clients. Run with `uvicorn gateway.main:app`."""

from __future__ import annotations

from fastapi import FastAPI

from gateway.routes import health


def create_app() -> FastAPI:
    app = FastAPI(
        title="Embedding Flywheel gateway",
        version="0.1.0",
        description="Publish content and clicks, search, and steer training and rollouts.",
    )
    app.include_router(health.router)
    return app


app = create_app()
