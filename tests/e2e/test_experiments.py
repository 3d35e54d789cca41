"""A/B split through the gateway and the improver, against the real stack.

- A second version with a complete index: the base model placed in Triton under a new number,
  its chunk table filled from version 1 (the same model, so the same vectors) and marked complete.
- The improver runs its handler (core.improver.improve_tenants) over the real PostgreSQL, FerretDB
  and Triton, per tenant: the test tenant's clicks move its items on its active version, another
  tenant's clicks on the same version move nothing of it, and each tenant's state is its own;
  session documents are written straight to MongoDB; everything is reverted afterwards.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio

from core.ab import ABSplit, choose_version
from core.adapters.pgvector import PgVectorStore
from core.adapters.session_store import MongoSessionStore
from core.adapters.triton_embedder import TritonEmbedder
from core.adapters.triton_repository import model_versions
from core.adapters.vector_adjustments import PgVectorAdjustments, as_array
from core.api_keys import hash_key
from core.base_model import default_base_model_dir
from core.bootstrap import build_model_control
from core.config import Settings
from core.domain import SearchQuery
from core.improver import ImproverConfig, improve_tenants
from core.search import search
from core.training.dataset import is_eval_session
from infra.process import Component
from infra.services import gateway_service
from producers.publisher import Publisher
from tests.conftest import _run
from tests.helpers import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.rollout]

ADMIN = f"key-ab-{uuid.uuid4().hex}"
TENANT = f"ab-{uuid.uuid4().hex[:6]}"
DOCS = {
    "cat": "The domestic cat is a small carnivorous mammal that purrs and hunts mice.",
    "dog": "Dogs are loyal domesticated mammals that bark and fetch sticks.",
    "rocket": "A rocket engine burns propellant to produce thrust and reach orbit.",
    "bread": "Bread is baked from a dough of flour and water, leavened with yeast.",
}
AUTH = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture(scope="module")
def ab_gateway(
    test_settings: Settings, kafka: Component, postgres: Component, mongodb: Component,
    triton: Component, indexer_service: Component, sessions_service: Component,
) -> Iterator[str]:
    records = [{"key_id": "ab-admin", "key_sha256": hash_key(ADMIN), "tenant": TENANT,
                "scopes": ["publish", "search", "admin"]}]
    settings = test_settings.model_copy(update={
        "api_keys_json": json.dumps(records), "ab_metrics_cache_s": 0.0, "ab_split_cache_s": 0.0,
    })
    for _ in _run(gateway_service(settings)):
        yield settings.gateway_url


@pytest_asyncio.fixture(scope="module")
async def indexed(publisher: Publisher, indexer_service: Component, store: PgVectorStore) -> str:
    await publisher.publish_many("content-upserted", [
        {"id": id_, "title": id_, "text": text, "version": 1, "tenant": TENANT} for id_, text in DOCS.items()
    ])

    async def done() -> bool:
        return await store.count_items(TENANT) == len(DOCS)
    await wait_for(done)
    active = await store.active_version(TENANT)
    assert active is not None
    return active


@pytest_asyncio.fixture(scope="module")
async def candidate(
    indexed: str, store: PgVectorStore, embedder: TritonEmbedder, test_settings: Settings
) -> AsyncIterator[str]:
    """A complete second version: the base model under a new number, its index copied."""
    control = build_model_control(test_settings)
    existing = model_versions(test_settings.triton_repository, test_settings.triton_model_name)
    version = str(max(existing) + 200)
    try:
        await asyncio.to_thread(control.place_version, int(version), default_base_model_dir())
        await control.load()
        assert await control.is_ready(version)
        dim = (await store.dimensions())[indexed]
        await store.for_tenant(TENANT).ensure_version(version, dim)
        async with store.pool.connection() as conn:
            await conn.execute(
                f"INSERT INTO chunks_v{version} SELECT * FROM chunks_v{int(indexed)} WHERE tenant = %s",
                (TENANT,))
        await store.for_tenant(TENANT).finish_version(version)
        yield version
    finally:
        async with store.pool.connection() as conn:
            await conn.execute("DELETE FROM tenant_ab_split WHERE tenant = %s", (TENANT,))
            await conn.execute("DELETE FROM tenant_versions WHERE version = %s AND status <> 'active'",
                               (version,))
            await conn.execute("DELETE FROM model_versions WHERE version = %s AND NOT EXISTS "
                               "(SELECT 1 FROM tenant_versions WHERE version = %s)", (version, version))
            await conn.execute(f"DROP TABLE IF EXISTS chunks_v{int(version)}")
        await asyncio.to_thread(control.remove_version, int(version))
        await control.load()
        await control.close()


async def test_a_50_percent_split_routes_sessions_deterministically_and_models_report_ctr_and_mrr(
    ab_gateway: str, indexed: str, candidate: str, session_store: MongoSessionStore,
) -> None:
    async with httpx.AsyncClient(base_url=ab_gateway, timeout=30) as client:
        building = await client.put("/v1/models/ab-split", headers=AUTH,
                                    json={"candidate_version": "987654", "percent": 50})
        assert building.status_code == 404, building.text
        put = await client.put("/v1/models/ab-split", headers=AUTH,
                               json={"candidate_version": candidate, "percent": 50})
        assert put.status_code == 200, put.text
        split = ABSplit(candidate, 50.0)

        served: dict[str, str] = {}
        sessions = [f"ab-{TENANT}-{i}" for i in range(16)]
        for sid in sessions:
            for _ in range(2):  # the same session always lands on the same version
                found = await client.post("/v1/search", headers=AUTH, json={
                    "query": "a pet that purrs", "k": 3, "session_id": sid})
                assert found.status_code == 200, found.text
                body = found.json()
                assert served.setdefault(sid, body["model_version"]) == body["model_version"]
            assert served[sid] == choose_version(indexed, split, sid)
        assert set(served.values()) == {indexed, candidate}
        anonymous = await client.post("/v1/search", headers=AUTH, json={"query": "a pet that purrs"})
        assert anonymous.json()["model_version"] == indexed

        # Click the first result in every other session: credited to the version that served it.
        clicked = sessions[::2]
        events = [{"type": "click", "session_id": sid, "content_id": "cat", "rank": 1} for sid in clicked]
        assert (await client.post("/v1/clicks", headers=AUTH, json={"events": events})).status_code == 202

        async def folded() -> bool:
            docs = await session_store.get_many([f"{TENANT}/{sid}" for sid in sessions])
            return (len(docs) == len(sessions) and all(len(d["searches"]) == 2 for d in docs.values())
                    and sum(len(s["clicks"]) for d in docs.values() for s in d["searches"]) == len(clicked))
        await wait_for(folded)

        models = (await client.get("/v1/models", headers=AUTH)).json()
        rows = {row["version"]: row for row in models["versions"]}
        assert models["ab_split"]["candidate_version"] == candidate and models["ab_split"]["percent"] == 50
        assert rows[indexed]["traffic"]["percent"] == 50 and rows[candidate]["traffic"]["percent"] == 50
        # Each session searched twice; a click attaches to the latest search showing the item.
        cand_sessions = [s for s in sessions if served[s] == candidate]
        cand_clicked = [s for s in clicked if served[s] == candidate]
        assert rows[candidate]["searches"] == 2 * len(cand_sessions)  # only this test uses it
        assert rows[candidate]["ctr"] == pytest.approx(len(cand_clicked) / (2 * len(cand_sessions)))
        assert rows[candidate]["mrr"] == pytest.approx(len(cand_clicked) / (2 * len(cand_sessions)))
        assert rows[indexed]["searches"] >= 2 * (len(sessions) - len(cand_sessions))
        assert rows[indexed]["ctr"] is not None and 0 < rows[indexed]["mrr"] <= 1
        # The form each version serves in Triton, as it chose when loaded (its serving.json).
        for version in (indexed, candidate):
            serving = rows[version]["serving"]
            assert serving["form"] in ("fp32", "bf16", "fp16", "onnx", "onnx-int8"), serving
            assert serving["passed"][serving["form"]], serving
            assert serving["quality"]["fp32"]["min_cosine_to_fp32"] == 1.0
            assert "fp32" in serving["texts_per_s"]

        assert (await client.delete("/v1/models/ab-split", headers=AUTH)).status_code == 204
        after = await client.post("/v1/search", headers=AUTH, json={
            "query": "a pet that purrs", "session_id": cand_sessions[0]})
        assert after.json()["model_version"] == indexed
        assert (await client.get("/v1/models", headers=AUTH)).json()["ab_split"] is None


async def _vectors(store: PgVectorStore, version: str) -> dict[tuple[str, int], np.ndarray]:
    async with store.pool.connection() as conn:
        rows = await (await conn.execute(
            f"SELECT item_id, chunk_no, embedding FROM chunks_v{int(version)} WHERE tenant = %s",
            (TENANT,))).fetchall()
    return {(r[0], int(r[1])): as_array(r[2]) for r in rows}


def _session(sid: str, query: str, ranking: list[str], clicked: str, version: str) -> dict[str, Any]:
    at = datetime.now(UTC)
    return {
        "_id": f"{TENANT}/{sid}", "tenant": TENANT, "session_id": sid, "first_event_at": at,
        "last_event_at": at, "created_at": at, "revision": 0, "event_ids": [], "model_versions": [version],
        "searches": [{"event_id": f"s-{sid}", "query": query, "at": at, "model_version": version,
                      "results": [{"id": i, "rank": r, "score": 0.0} for r, i in enumerate(ranking, 1)],
                      "clicks": [{"event_id": f"c-{sid}", "content_id": clicked,
                                  "rank": ranking.index(clicked) + 1, "at": at}],
                      "conversions": []}],
        "unattached": [],
    }


async def test_the_improver_moves_a_clicked_item_up_and_revert_restores_the_exact_vectors(
    indexed: str, store: PgVectorStore, embedder: TritonEmbedder, session_store: MongoSessionStore,
) -> None:
    adjustments = PgVectorAdjustments(store.pool)
    query = "a small mammal kept as a pet"
    config = ImproverConfig(alpha=0.2, min_cosine=0.9, settle_s=0.0)
    # Earlier tests' clicks in this tenant are folded first and undone (the watermark stays),
    # so the rounds below count only this test's clicks.
    await improve_tenants(adjustments, session_store, embedder, config, tenants=[TENANT])
    await adjustments.revert(indexed, tenant=TENANT)
    original = await _vectors(store, indexed)

    async def ranking() -> list[str]:
        result = await search(SearchQuery(query, 4, TENANT, version=indexed), store.for_tenant(TENANT),
                              embedder)
        return [hit.id for hit in result.hits]

    before = await ranking()
    target = before[1]  # users click the second result, skipping the first
    other = f"imp-other-{uuid.uuid4().hex[:6]}"  # serves the same version; none of the items are its
    assert await store.active_version(other) == indexed
    try:
        revision = (await adjustments.improver_state(indexed, TENANT)).revision
        rounds = 0
        for _ in range(6):
            rounds += 1
            sid = next(s for s in (f"imp-{uuid.uuid4().hex[:8]}" for _ in range(100))
                       if not is_eval_session(f"{TENANT}/{s}", config.eval_fraction))
            shown = await ranking()
            assert await session_store.save(_session(sid, query, shown, target, indexed), None)
            # The other tenant's users click the first result, against this tenant's clicks.
            theirs = {**_session(sid, query, shown, shown[0], indexed),
                      "_id": f"{other}/{sid}", "tenant": other}
            assert await session_store.save(theirs, None)
            await asyncio.sleep(0.05)
            reports = {r.tenant: r for r in await improve_tenants(
                adjustments, session_store, embedder, config, tenants=[TENANT, other])}
            report = reports[TENANT]
            assert report.committed and report.version == indexed
            assert report.clicks == 1 and report.revision > revision
            assert reports[other].version == indexed and reports[other].items == 0
            revision = report.revision
            if (await ranking())[0] == target:
                break
        now = await ranking()
        assert now[0] == target and now.index(before[0]) > 0, (before, now, rounds)
        state = await adjustments.improver_state(indexed, TENANT)
        assert "items_adjusted_last_run" in state.metrics and state.metrics["revision"] == revision
        assert (await adjustments.improver_state(indexed, other)).revision == 0  # its own state
        assert (await adjustments.all_states(other))[indexed]["adjusted_chunks"] == 0
        moved = await _vectors(store, indexed)
        assert any(not np.array_equal(moved[k], original[k]) for k in original)
        for key, vector in moved.items():  # bounded drift
            assert float(vector @ original[key]) >= 0.9 - 1e-4
        # Another tenant's admin undoing the improver restores nothing of this tenant's.
        assert await adjustments.revert(indexed, tenant="another-tenant") == 0
        still = await _vectors(store, indexed)
        assert all(np.array_equal(still[k], moved[k]) for k in moved)
        revision = (await adjustments.improver_state(indexed, TENANT)).revision
    finally:
        restored = await adjustments.revert(indexed)
    assert restored >= 2
    after = await _vectors(store, indexed)
    assert after.keys() == original.keys()
    assert all(np.array_equal(after[k], original[k]) for k in original)
    assert await ranking() == before
    assert (await adjustments.improver_state(indexed, TENANT)).revision == revision + 1


async def test_the_improvers_global_state_migrates_to_each_tenant_in_place(store: PgVectorStore) -> None:
    """The old one-row-per-version state goes to the default tenant and to each tenant with
    adjustments in that version; the old table is gone afterwards."""
    version, tenant = f"mig{uuid.uuid4().hex[:6]}", f"mig-{uuid.uuid4().hex[:6]}"
    adjustments = PgVectorAdjustments(store.pool)
    await adjustments.ensure_schema()
    async with store.pool.connection() as conn:
        await conn.execute("CREATE TABLE improver_state (version text PRIMARY KEY, revision bigint NOT NULL "
                           "DEFAULT 0, watermark timestamptz, metrics jsonb NOT NULL DEFAULT '{}', "
                           "updated_at timestamptz NOT NULL DEFAULT now())")
        await conn.execute("INSERT INTO improver_state (version, revision, watermark, metrics) "
                           "VALUES (%s, 7, now(), '{\"revision\": 7}')", (version,))
        await conn.execute("INSERT INTO item_adjustments (version, tenant, item_id, chunk_no, "
                           "item_version, original, revision) VALUES (%s, %s, 'doc', 0, 1, '[1,0,0]', 7)",
                           (version, tenant))
    try:
        await PgVectorAdjustments(store.pool).ensure_schema()  # what a service does as it starts
        for owner in ("default", tenant):
            state = await adjustments.improver_state(version, owner)
            assert state.revision == 7 and state.metrics == {"revision": 7.0} and state.watermark is not None
        assert (await adjustments.improver_state(version, "someone-else")).revision == 0
        async with store.pool.connection() as conn:
            assert (await (await conn.execute("SELECT to_regclass('improver_state')")).fetchone()) == (None,)
    finally:
        async with store.pool.connection() as conn:
            await conn.execute("DELETE FROM item_adjustments WHERE version = %s", (version,))
            await conn.execute("DELETE FROM improver_tenant_state WHERE version = %s", (version,))
