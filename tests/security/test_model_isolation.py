"""Red team, against the real stack: a flood of fabricated clicks in tenant A, then training in
A, rolled out through MLflow, Triton and the reindexer, leaves the model tenant B is served
exactly as it was. B's active version, its version list, its search results, the vectors
/v1/embeddings gives it and its items' stored vectors are compared byte for byte; A's version
is not B's to embed with, activate or reindex (404)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from core.adapters.pgvector import PgVectorStore
from core.adapters.session_store import MongoSessionStore
from core.adapters.task_store import TaskStore
from core.api_keys import hash_key
from core.config import Settings
from core.rollout import reindex_task_id
from infra.process import Component
from infra.services import gateway_service
from producers.publisher import Publisher
from tests.conftest import _run
from tests.helpers import wait_for
from tests.integration.test_rollout import (  # noqa: F401 - fixtures
    deployer_service,
    reindexer_service,
    tasks,
    wait_task,
)
from tests.integration.test_training import finished, sessions_of, training_data

pytestmark = [pytest.mark.integration, pytest.mark.rollout]

A, B = f"red-a-{uuid.uuid4().hex[:6]}", f"red-b-{uuid.uuid4().hex[:6]}"
KEYS = {"admin-a": (A, ["admin"]), "admin-b": (B, ["admin"]), "search-b": (B, ["search"])}
B_DOCS = {
    "cat": "The domestic cat is a small carnivorous mammal that purrs and hunts mice.",
    "rocket": "A rocket engine burns propellant to produce thrust and reach orbit.",
    "bread": "Bread is baked from a dough of flour and water, leavened with yeast.",
}
FLOOD = 300  # fabricated click events on top of A's synthetic sessions


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer secret-{name}"}


@pytest.fixture(scope="module")
def red_gateway(
    test_settings: Settings, kafka: Component, postgres: Component, mongodb: Component, triton: Component,
) -> Iterator[str]:
    records = [{"key_id": name, "key_sha256": hash_key(f"secret-{name}"), "tenant": tenant, "scopes": scopes}
               for name, (tenant, scopes) in KEYS.items()]
    settings = test_settings.model_copy(update={"api_keys_json": json.dumps(records)})
    for _ in _run(gateway_service(settings)):
        yield settings.gateway_url


async def b_state(client: httpx.AsyncClient, store: PgVectorStore) -> dict[str, Any]:
    """Everything about the model B is served, as bytes where it has bytes."""
    models = await client.get("/v1/models", headers=auth("admin-b"))
    assert models.status_code == 200, models.text
    listed = models.json()
    embedded = await client.post("/v1/embeddings", headers=auth("search-b"), json={
        "input": ["a pet that purrs", "how rockets reach orbit"], "model": "active",
        "encoding_format": "base64"})
    assert embedded.status_code == 200, embedded.text
    found = await client.post("/v1/search", headers=auth("search-b"),
                              json={"query": "a pet that purrs", "k": 3})
    assert found.status_code == 200, found.text
    active = listed["active_version"]
    async with store.pool.connection() as conn:
        vectors = await (await conn.execute(
            f"SELECT item_id, chunk_no, item_version, embedding::text FROM chunks_v{int(active)} "
            "WHERE tenant = %s ORDER BY item_id, chunk_no", (B,))).fetchall()
    return {
        "active_version": active,
        "versions": [{k: v for k, v in row.items() if k in ("version", "status", "dim", "owner", "created_at",
                                                               "activated_at", "reason")}
                     for row in listed["versions"]],
        "ab_split": listed["ab_split"],
        "embeddings": [(d["index"], d["embedding"]) for d in embedded.json()["data"]],
        "embedding_model": embedded.json()["model"],
        "search": found.json()["results"], "search_version": found.json()["model_version"],
        "vectors": vectors,
    }


async def test_fabricated_clicks_and_training_in_a_leave_the_model_b_is_served_unchanged(
    red_gateway: str, indexer_service: Component, sessions_service: Component, trainer_service: Component,
    deployer_service: Component, reindexer_service: Component,  # noqa: F811
    publisher: Publisher, store: PgVectorStore, session_store: MongoSessionStore,
    tasks: TaskStore,  # noqa: F811
) -> None:
    await publisher.publish_many("content-upserted", [
        {"id": id_, "title": id_, "text": text, "version": 1, "tenant": B} for id_, text in B_DOCS.items()])
    since = await training_data(publisher, store, session_store, A, 24)  # A's items and sessions

    async def b_indexed() -> bool:
        return await store.count_items(B) == len(B_DOCS)
    await wait_for(b_indexed, 120)

    async with httpx.AsyncClient(base_url=red_gateway, timeout=60) as client:
        before = await b_state(client, store)

        # The flood: clicks on items A does not even have, in sessions nobody searched in.
        events = [{"type": "click", "session_id": f"forged-{n % 50}", "content_id": f"forged-{n}", "rank": 1}
                  for n in range(FLOOD)]
        for start in range(0, FLOOD, 100):
            sent = await client.post("/v1/clicks", headers=auth("admin-a"),
                                     json={"events": events[start:start + 100]})
            assert sent.status_code == 202, sent.text

        async def flooded() -> bool:
            docs = (await sessions_of(session_store, A)).values()
            return sum(d["session_id"].startswith("forged-") for d in docs) == 50
        await wait_for(flooded, 120)

        # Training in A, on A's sessions only, rolled out into A's lineage.
        accepted = await client.post("/v1/training-runs", headers=auth("admin-a"), json={
            "min_sessions": 10, "gate_margin": 0.0, "since": since.isoformat(),
            "until": (datetime.now(UTC) + timedelta(seconds=1)).isoformat()})
        assert accepted.status_code == 202, accepted.text
        trained = await finished(tasks, accepted.json()["task_id"], timeout_s=900)
        assert trained["status"] == "succeeded", trained
        assert trained["tenant"] == A
        version = trained["details"]["model_version"]
        assert (await wait_task(tasks, f"deploy-{version}", 600))["status"] == "succeeded"
        assert (await wait_task(tasks, reindex_task_id(version, A), 600))["status"] == "succeeded"
        assert await store.active_version(A) == version and (await store.owners())[version] == A

        # B: byte for byte what it was.
        after = await b_state(client, store)
        assert after == before
        assert version not in {row["version"] for row in (await client.get(
            "/v1/models", headers=auth("admin-b"))).json()["versions"]}
        # A's version is not B's: not to embed with, activate, split on or reindex.
        refused = await client.post("/v1/embeddings", headers=auth("search-b"),
                                    json={"input": "x", "model": version})
        assert refused.status_code == 404, refused.text
        activated = await client.post(f"/v1/models/{version}/activate", headers=auth("admin-b"))
        assert activated.status_code == 404, activated.text
        split = await client.put("/v1/models/ab-split", headers=auth("admin-b"),
                                 json={"candidate_version": version, "percent": 50})
        assert split.status_code == 404, split.text
        reindex = await client.post("/v1/reindex", headers=auth("admin-b"), json={"model_version": version})
        assert reindex.status_code == 404, reindex.text
        assert await tasks.get(reindex_task_id(version, B)) is None
        assert await b_state(client, store) == before
