"""The AsyncAPI document of the events, beside the OpenAPI one."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from schemas.export import asyncapi_document

router = APIRouter(tags=["docs"])


@router.get("/asyncapi.json")
async def asyncapi() -> dict[str, Any]:
    return asyncapi_document()
