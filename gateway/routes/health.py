"""Process health, readiness of the components the gateway depends on, and metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from core.config import get_settings
from gateway.readiness import readiness

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz() -> JSONResponse:
    """Kafka, PostgreSQL, MongoDB and Triton, each probed at its configured address."""
    ready, components = await asyncio.to_thread(readiness, get_settings())
    return JSONResponse({"ready": ready, "components": components}, status_code=200 if ready else 503)


@router.get("/metrics")
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
