"""GET /v1/content/{id} over the real PostgreSQL (a database of its own), the gateway in-process:
the item as stored, when it was indexed, and which model versions hold its current version;
another tenant's key answers 404 and a key without the search scope 403."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.adapters.pgvector import PgVectorStore
from core.api_keys import hash_key
from core.config import Settings
from core.domain import ChunkVectors, Item
from gateway.main import create_app
from tests.integration.test_rollout_races import fresh_dsn, fresh_pg  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

DIM = 8
KEYS = {"a": ("tenant-a", ["search"]), "b": ("tenant-b", ["search", "publish"]),
        "pub": ("tenant-a", ["publish"])}


def chunks(item: Item, count: int) -> ChunkVectors:
    vectors = np.eye(DIM, dtype=np.float32)[:count]
    return ChunkVectors(item, [item.text] * count, vectors)


async def test_an_item_shows_as_stored_for_its_own_tenant_only(
    fresh_dsn: str, fresh_pg: PgVectorStore, test_settings: Settings,  # noqa: F811
) -> None:
    store = fresh_pg
    await store.ensure_schema()
    lineage = store.for_tenant("tenant-a")
    await lineage.ensure_version("1", DIM, status="building")
    await lineage.activate("1")
    await lineage.ensure_version("2", DIM, status="building")
    old = Item("tenant-a", "doc-1", "Old title", "old text", {"year": 1999}, 1)
    new = Item("tenant-a", "doc-1", "Cats", "all about cats", {"year": 2001, "tags": ["pets"]}, 2)
    await store.apply({"1": [chunks(old, 1)], "2": [chunks(old, 1)]}, [])
    await store.apply({"1": [chunks(new, 2)]}, [])  # version 2 (building) has not caught up yet

    records = [{"key_id": name, "key_sha256": hash_key(f"secret-{name}"), "tenant": tenant, "scopes": scopes}
               for name, (tenant, scopes) in KEYS.items()]
    settings = test_settings.model_copy(
        update={"postgres_url": fresh_dsn, "api_keys_json": json.dumps(records)})

    def get(item_id: str, key: str) -> Any:
        with TestClient(create_app(settings)) as client:
            return client.get(f"/v1/content/{item_id}", headers={"Authorization": f"Bearer secret-{key}"})

    response = get("doc-1", "a")
    assert response.status_code == 200, response.text
    body = response.json()
    assert {k: body[k] for k in ("id", "version", "title", "text", "metadata")} == {
        "id": "doc-1", "version": 2, "title": "Cats", "text": "all about cats",
        "metadata": {"year": 2001, "tags": ["pets"]}}
    assert datetime.fromisoformat(body["indexed_at"]).tzinfo is not None
    assert body["searchable_in"] == ["1"]
    assert body["indexes"] == [
        {"version": "1", "status": "active", "active": True, "chunks": 2, "item_version": 2},
        {"version": "2", "status": "building", "active": False, "chunks": 1, "item_version": 1},
    ]
    other = get("doc-1", "b")
    assert other.status_code == 404 and other.headers["content-type"] == "application/problem+json"
    assert get("doc-1", "pub").status_code == 403
    assert get("nope", "a").status_code == 404

    await store.apply({}, [("tenant-a", "doc-1")])
    assert get("doc-1", "a").status_code == 404  # deleted
