"""Process health, readiness of the components the gateway depends on, and metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from core.config import get_settings
from infra.stack import dependency_components

router = APIRouter(tags=["health"])
# What the gateway itself needs to serve requests (MLflow is the trainer's).
GATEWAY_DEPENDENCIES = ("kafka", "postgres", "mongodb", "triton")


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz() -> JSONResponse:
    components = [c for c in dependency_components(get_settings()) if c.name in GATEWAY_DEPENDENCIES]
    checks = await asyncio.gather(*(asyncio.to_thread(c.check) for c in components))
    body = {
        c.name: {"healthy": h.healthy, "detail": h.detail} for c, h in zip(components, checks, strict=True)
    }
    ready = all(h.healthy for h in checks)
    return JSONResponse({"ready": ready, "components": body}, status_code=200 if ready else 503)


@router.get("/metrics")
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
