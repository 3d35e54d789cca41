"""Each tenant's model lineage in the real PostgreSQL: the migration from the global rollout
state, and two tenants whose versions, rollbacks and splits never touch each other."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import numpy as np
import pytest_asyncio
from psycopg import AsyncConnection

from core.ab import configure_split
from core.adapters.ab_split_store import PgSplitStore
from core.adapters.pgvector import PgVectorStore
from core.config import Settings
from core.domain import NEW_TENANTS, ChunkVectors, Item
from core.rollout import activate_version
from infra.process import Component

DIM = 4

# The tables as they were before tenants had lineages (one global state).
OLD_SCHEMA = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE items (tenant text NOT NULL, id text NOT NULL, title text NOT NULL DEFAULT '',
    text text NOT NULL DEFAULT '', metadata jsonb NOT NULL DEFAULT '{}', version bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    tsv tsvector GENERATED ALWAYS AS
        (to_tsvector('english', coalesce(title, '') || ' ' || coalesce(text, ''))) STORED,
    PRIMARY KEY (tenant, id));
CREATE TABLE model_versions (version text PRIMARY KEY, dim integer NOT NULL,
    status text NOT NULL CHECK (status IN ('building', 'active', 'retired', 'failed')),
    created_at timestamptz NOT NULL DEFAULT now(), activated_at timestamptz, retired_at timestamptz,
    reason text);
CREATE TABLE active_model (singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version text NOT NULL REFERENCES model_versions (version));
CREATE TABLE ab_split (singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    candidate_version text NOT NULL, percent double precision NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(), ended_at timestamptz, end_reason text);
INSERT INTO items (tenant, id, version) VALUES ('acme', 'a1', 1), ('globex', 'g1', 1);
INSERT INTO model_versions (version, dim, status, retired_at) VALUES
    ('1', 4, 'retired', now()), ('2', 4, 'active', NULL), ('3', 4, 'failed', NULL);
INSERT INTO active_model VALUES (true, '2');
INSERT INTO ab_split (singleton, candidate_version, percent) VALUES (true, '1', 10);
"""


@pytest_asyncio.fixture
async def fresh_dsn(postgres: Component, test_settings: Settings) -> AsyncIterator[str]:
    name = f"lineage_{uuid.uuid4().hex[:12]}"
    admin_dsn = test_settings.postgres_dsn
    async with await AsyncConnection.connect(admin_dsn, autocommit=True) as conn:
        await conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    finally:
        async with await AsyncConnection.connect(admin_dsn, autocommit=True) as conn:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_the_global_state_migrates_in_place_every_tenant_starting_where_it_was(fresh_dsn: str) -> None:
    async with await AsyncConnection.connect(fresh_dsn, autocommit=True) as conn:
        await conn.execute(OLD_SCHEMA)
    store = await PgVectorStore.connect(fresh_dsn)
    try:
        splits = PgSplitStore(store.pool)
        for tenant in ("acme", "globex", NEW_TENANTS):
            lineage = store.for_tenant(tenant)
            assert await lineage.active_version() == "2", tenant
            rows = {row["version"]: row["status"] for row in await lineage.list_versions()}
            assert rows == {"1": "retired", "2": "active", "3": "failed"}, tenant
            assert await lineage.writable_versions() == ["1", "2"]  # 1 is the rollback target
            split = await splits.get_split(tenant)
            assert split is not None and split.candidate_version == "1" and split.percent == 10
        assert await store.dimensions() == {"1": DIM, "2": DIM, "3": DIM}
        assert await store.owners() == {"1": None, "2": None, "3": None}
        # Connecting again changes nothing: the migration ran once.
        await store.ensure_schema()
        assert await store.active_version("acme") == "2"
    finally:
        await store.close()


@pytest_asyncio.fixture
async def fresh_store(fresh_dsn: str) -> AsyncIterator[PgVectorStore]:
    """A store on a fresh database whose new tenants start on version 1."""
    store = await PgVectorStore.connect(fresh_dsn)
    try:
        new = store.for_tenant(NEW_TENANTS)
        await new.ensure_version("1", DIM)
        await new.activate("1")
        yield store
    finally:
        await store.close()


def chunks(tenant: str, item_id: str, version: int = 1) -> ChunkVectors:
    vector = np.ones((1, DIM), dtype=np.float32) / 2
    return ChunkVectors(Item(tenant, item_id, item_id, "text", {}, version), ["text"], vector)


async def test_two_tenants_lineages_never_touch_each_other(fresh_store: PgVectorStore) -> None:
    store = fresh_store
    a, b = store.for_tenant("tenant-a"), store.for_tenant("tenant-b")
    await store.apply({"1": [chunks("tenant-a", "x"), chunks("tenant-b", "y")]}, [])
    state_b = (await b.active_version(), await b.list_versions(), await b.writable_versions())

    # Tenant a builds its own version 5 (owned by it) and activates it.
    await a.ensure_version("5", DIM)
    assert await a.writable_versions() == ["1", "5"] and await b.writable_versions() == ["1"]
    await store.apply({"5": [chunks("tenant-a", "x")]}, [])
    await a.finish_version("5")  # its reindex done
    assert (await activate_version(a, "5")).previous == "1"
    assert await store.owners() == {"1": None, "5": "tenant-a"}
    assert await a.active_version() == "5" and await b.active_version() == "1"
    assert (await b.active_version(), await b.list_versions(), await b.writable_versions()) == state_b
    assert "5" not in {row["version"] for row in await b.list_versions()}  # not b's to activate

    # Tenant a's split and rollback stay its own.
    splits = PgSplitStore(store.pool)
    await configure_split(splits.for_tenant("tenant-a"), a, "1", 30.0)
    assert await splits.get_split("tenant-b") is None
    assert (await activate_version(a, "1")).previous == "5"  # a rolls back
    assert await a.writable_versions() == ["1", "5"]  # 5 is a's rollback target now
    assert (await b.active_version(), await b.list_versions(), await b.writable_versions()) == state_b

    # What the model server must keep: every version some tenant serves, builds or can roll back to.
    assert await store.served_versions() == {"1", "5"}
    # A reindex of a's version re-embeds a's items only.
    await store.apply({}, [])
    assert [i.id for i in await a.missing_items("5")] == []
    await store.apply({"1": [chunks("tenant-b", "y2")]}, [])
    assert [i.id for i in await a.missing_items("5")] == []
    assert [i.id for i in await b.missing_items("5")] == ["y", "y2"]


async def test_a_failed_or_cancelled_build_drops_what_it_wrote_of_its_tenant_only(
    fresh_store: PgVectorStore,
) -> None:
    store = fresh_store
    a, b = store.for_tenant("tenant-a"), store.for_tenant("tenant-b")
    await store.apply({"1": [chunks("tenant-a", "x"), chunks("tenant-b", "y")]}, [])
    await a.ensure_version("6", DIM)
    await store.apply({"6": [chunks("tenant-a", "x")]}, [])

    async def rows(version: str, tenant: str) -> int:
        async with store.pool.connection() as conn:
            found = await (await conn.execute(
                f"SELECT count(*) FROM chunks_v{version} WHERE tenant = %s", (tenant,))).fetchone()
        assert found is not None
        return int(found[0])

    assert await rows("6", "tenant-a") == 1
    assert await a.fail_version("6", "reindexing: cancelled")
    assert await rows("6", "tenant-a") == 0  # the half-built index is gone
    assert await a.active_version() == "1" and await rows("1", "tenant-a") == 1  # still serving
    assert await rows("1", "tenant-b") == 1 and await b.active_version() == "1"
    assert "6" not in await a.writable_versions()
    assert not await a.fail_version("6", "again")  # only a version being built


async def test_a_version_keeps_the_first_fusion_weight_recorded_for_it(fresh_store: PgVectorStore) -> None:
    store = fresh_store
    a = store.for_tenant("tenant-a")
    await a.ensure_version("5", DIM)  # an operator's reindex before the trained one: none yet
    assert await store.fusion_weight("5") is None
    await a.ensure_version("5", DIM, fusion_weight=0.3)  # model-published's, via the deployer
    await a.ensure_version("5", DIM)  # a later reindex naming none keeps it
    await a.ensure_version("5", DIM, fusion_weight=0.9)  # recorded once: never changed after
    assert await store.fusion_weight("5") == 0.3 and await store.fusion_weight("1") is None
    assert await store.fusion_weight("404") is None
    assert {r["version"]: r["fusion_weight"] for r in await a.list_versions()} == {"1": None, "5": 0.3}
