"""Model versions: list with metrics, promote or roll back."""

from __future__ import annotations

from fastapi import APIRouter

from gateway.deps import Admin, Searching, StoreDep
from gateway.models import Activated, ModelsResponse, ModelVersionInfo
from gateway.problems import Problem

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=ModelsResponse)
async def list_models(who: Searching, store: StoreDep) -> ModelsResponse:
    active = await store.active_version()
    versions = [
        ModelVersionInfo(active=row["version"] == active, **row) for row in await store.list_versions()
    ]
    return ModelsResponse(active_version=active, versions=versions)


@router.post("/{version}/activate", response_model=Activated)
async def activate(version: str, who: Admin, store: StoreDep) -> Activated:
    """Switch search to `version` at once: a promotion, or a rollback to a retired version."""
    rows = {row["version"]: row for row in await store.list_versions()}
    if version not in rows:
        raise Problem(404, f"model version {version!r} has no index")
    if rows[version]["status"] == "building":
        raise Problem(409, f"model version {version} is still being indexed; "
                           "activate it when its reindex is done")
    previous = await store.activate(version)
    return Activated(active_version=version, previous_version=previous)
