"""Rollout state changes racing each other on the real PostgreSQL: every activation, rollback,
reindex switch and split change is a compare-and-set on the state it was decided from, so a
lost race is refused (core.domain.ConcurrentChange, 409 in the API) instead of applied over the
other change. Each test uses a database of its own (the shared one holds the stack's versions)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from psycopg import AsyncConnection

from consumers.reindexer.handlers import ReindexDeps, reindex
from core.ab import InvalidSplit, configure_split
from core.adapters.ab_split_store import PgSplitStore, TenantSplits
from core.adapters.pgvector import PgVectorStore, TenantStore
from core.adapters.pgvector.schema import ROLLOUT_LOCK
from core.bootstrap import build_store, ensure_initial_version
from core.chunking import Chunker, ChunkingConfig
from core.config import Settings
from core.domain import NEW_TENANTS, ConcurrentChange, Expected
from core.indexing import index_batch, parse_records
from core.rollout import IndexStale, activate_version
from infra.process import Component
from schemas.reindex import ReindexRequested
from tests.unit.rollout_fakes import FakeLog, FakeServingEmbedder, FakeTasks
from tests.unit.test_indexer_handlers import WordTokenizer

pytestmark = pytest.mark.integration

DIM = 8


@pytest_asyncio.fixture
async def fresh_dsn(postgres: Component, test_settings: Settings) -> AsyncIterator[str]:
    name = f"races_{uuid.uuid4().hex[:12]}"
    admin_dsn = test_settings.postgres_dsn
    async with await AsyncConnection.connect(admin_dsn, autocommit=True) as conn:
        await conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    finally:
        async with await AsyncConnection.connect(admin_dsn, autocommit=True) as conn:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest_asyncio.fixture
async def fresh_pg(fresh_dsn: str) -> AsyncIterator[PgVectorStore]:
    store = await PgVectorStore.connect(fresh_dsn, max_size=6)
    try:
        yield store
    finally:
        await store.close()


@pytest_asyncio.fixture
async def fresh_store(fresh_pg: PgVectorStore) -> TenantStore:
    """Tenant t's lineage (the races are within one tenant's rollout state)."""
    return fresh_pg.for_tenant("t")


def splits_of(store: TenantStore) -> TenantSplits:
    return PgSplitStore(store.store.pool).for_tenant(store.tenant)


def chunker() -> Chunker:
    return Chunker(WordTokenizer(), ChunkingConfig(max_tokens=64, overlap_tokens=2))


class Rig:
    def __init__(self, store: TenantStore) -> None:
        self.store = store
        self.tasks = FakeTasks()
        self.embedder = FakeServingEmbedder({"1", "2", "3", "4"}, dim=DIM)
        self.log = FakeLog()

    def deps(self) -> ReindexDeps:
        return ReindexDeps(self.tasks, self.store, self.embedder, chunker(), self.log.open,  # type: ignore[arg-type]
                           batch_size=2, progress_every_s=0, ready_timeout_s=0.1)

    async def start(self, items: int = 4) -> None:
        """Version 1 active with `items` items indexed, as the live indexer leaves it."""
        await self.store.ensure_version("1", DIM)
        await self.store.activate("1")
        for i in range(items):
            self.log.upsert("t", f"doc{i}", f"text number {i}", 1, partition=i % 2)
        records = [r for p in sorted(self.log.partitions) for r in self.log.partitions[p]]
        parsed, _ = parse_records(tuple(records))
        await index_batch([op for _, op in parsed], self.store, self.embedder, chunker())

    async def reindex(self, version: str, **fields: Any) -> dict[str, Any]:
        return await reindex(ReindexRequested(model_version=version, tenant="t", **fields), self.deps())


async def test_a_rollback_while_a_reindex_runs_is_not_overridden_by_its_switch(
    fresh_store: TenantStore,
) -> None:
    rig = Rig(fresh_store)
    await rig.start()
    assert (await rig.reindex("2"))["status"] == "succeeded"  # 2 active, 1 the rollback target

    async def operator_rolls_back() -> None:
        assert (await activate_version(fresh_store, "1")).previous == "2"

    rig.log.after_commit = operator_rolls_back  # during the backfill of version 3
    task = await rig.reindex("3")
    assert task["status"] == "succeeded", task
    assert await fresh_store.active_version() == "1"  # the rollback stands
    assert task["details"]["activated"] is False
    assert "active version changed from 2 to 1" in task["details"]["note"]
    rows = {row["version"]: row["status"] for row in await fresh_store.list_versions()}
    assert rows == {"1": "active", "2": "retired", "3": "retired"}
    assert await fresh_store.writable_versions() == ["1", "3"]  # 3 complete: the rollback target


async def test_a_rollback_decided_before_a_reindex_switched_is_refused(fresh_store: TenantStore) -> None:
    rig = Rig(fresh_store)
    await rig.start()
    await rig.reindex("2")  # 2 active, 1 the rollback target
    await fresh_store.ensure_version("3", DIM)  # a reindex of 3, started while 2 was active

    class SwitchFirst:
        """The store as the rollback sees it: the reindex switches between decision and change."""

        def __getattr__(self, name: str) -> Any:
            return getattr(fresh_store, name)

        async def activate(self, version: str, expected: Expected | None = None) -> str | None:
            assert await fresh_store.activate("3", Expected("2", "building")) == "2"
            return await fresh_store.activate(version, expected)

    with pytest.raises(ConcurrentChange, match="active version changed from 2 to 3"):
        await activate_version(SwitchFirst(), "1")  # type: ignore[arg-type]
    assert await fresh_store.active_version() == "3"


async def test_concurrent_rollbacks_and_switches_apply_exactly_one(fresh_store: TenantStore) -> None:
    rig = Rig(fresh_store)
    await rig.start(items=0)
    version = 1
    for _ in range(8):
        # active A, rollback target B, C being built from A: roll back to B while C switches
        a = await fresh_store.active_version()
        assert a is not None
        b, c = str(version + 1), str(version + 2)
        for v in (b, c):
            await fresh_store.ensure_version(v, DIM)
        await fresh_store.finish_version(b)
        rollback = activate_version(fresh_store, b)
        switch = fresh_store.activate(c, Expected(a, "building"))
        outcomes = await asyncio.gather(rollback, switch, return_exceptions=True)
        lost = [o for o in outcomes if isinstance(o, BaseException)]
        # the rollback loses at its switch (ConcurrentChange) or, deciding after the switch, at its
        # checks (its version no longer receives content); the switch loses at its switch
        assert len(lost) == 1 and isinstance(lost[0], ConcurrentChange | IndexStale), outcomes
        winner = b if not isinstance(outcomes[0], BaseException) else c
        assert await fresh_store.active_version() == winner
        if winner == b:
            await fresh_store.finish_version(c)  # as the reindex does after losing
        version += 2


async def _race_split(store: TenantStore, splits: TenantSplits,
                      meanwhile: Callable[[], Awaitable[Any]]) -> None:
    """configure_split, with `meanwhile` landing between its checks and its change."""

    class Racing:
        async def set_split(self, candidate: str, percent: float, expected: Expected | None = None) -> Any:
            await meanwhile()
            return await splits.set_split(candidate, percent, expected)

    await configure_split(Racing(), store, "1", 20.0)  # type: ignore[arg-type]


async def test_a_split_decided_before_an_activation_is_refused(fresh_store: TenantStore) -> None:
    rig = Rig(fresh_store)
    await rig.start()
    await rig.reindex("2")  # 2 active, 1 the rollback target (still receives new content)
    await fresh_store.ensure_version("3", DIM)
    splits = splits_of(fresh_store)

    async def activate_3() -> None:
        await fresh_store.activate("3", Expected("2", "building"))  # 2 becomes the target, 1 stale

    with pytest.raises(ConcurrentChange, match="active version changed from 2 to 3"):
        await _race_split(fresh_store, splits, activate_3)
    assert await splits.get_split() is None


async def test_an_activation_after_a_split_ends_a_split_whose_candidate_goes_stale(
    fresh_store: TenantStore,
) -> None:
    rig = Rig(fresh_store)
    await rig.start()
    await rig.reindex("2")
    splits = splits_of(fresh_store)
    await configure_split(splits, fresh_store, "1", 20.0)
    assert await splits.get_split() is not None
    await fresh_store.ensure_version("3", DIM)
    await fresh_store.activate("3", Expected("2", "building"))
    assert await splits.get_split() is None
    ended = await splits.ended_split()
    assert ended is not None and ended.candidate_version == "1"
    assert "candidate version 1 stopped receiving new content when version 3 was activated" in ended.reason


async def test_concurrent_activations_and_split_changes_never_leave_a_stale_candidate(
    fresh_store: TenantStore,
) -> None:
    rig = Rig(fresh_store)
    await rig.start(items=0)
    splits = splits_of(fresh_store)
    version = 1
    for _ in range(8):
        # active A, rollback target B: split B against the switch to C (which makes B stale)
        a = await fresh_store.active_version()
        assert a is not None
        b, c = str(version + 1), str(version + 2)
        for v in (b, c):
            await fresh_store.ensure_version(v, DIM)
        await fresh_store.finish_version(b)
        await splits.clear_split()
        split = configure_split(splits, fresh_store, b, 20.0)
        switch = fresh_store.activate(c, Expected(a, "building"))
        outcomes = await asyncio.gather(split, switch, return_exceptions=True)
        assert not isinstance(outcomes[1], BaseException), outcomes
        in_force = await splits.get_split()
        assert in_force is None, "a split to a version that no longer receives content is in force"
        if isinstance(outcomes[0], BaseException):
            assert isinstance(outcomes[0], ConcurrentChange | InvalidSplit), outcomes
        else:  # the split landed first and the switch ended it
            ended = await splits.ended_split()
            assert ended is not None and ended.candidate_version == b
        version += 2


async def test_a_failed_reindex_marks_its_version_failed_so_nothing_writes_to_it(
    fresh_store: TenantStore,
) -> None:
    rig = Rig(fresh_store)
    await rig.start()
    rig.log.crash_after_commits = 0  # the backfill breaks (not a transient error)
    task = await rig.reindex("2")
    assert task["status"] == "failed"
    rows = {row["version"]: row for row in await fresh_store.list_versions()}
    assert rows["2"]["status"] == "failed" and "reindex failed at backfilling" in rows["2"]["reason"]
    assert await fresh_store.writable_versions() == ["1"]

    rig.log.crash_after_commits = None  # requested again: building again, resumed, activated
    task = await rig.reindex("2")
    assert task["status"] == "succeeded" and await fresh_store.active_version() == "2"
    assert await fresh_store.writable_versions() == ["1", "2"]


async def test_a_change_blocked_behind_a_hung_transaction_times_out(fresh_dsn: str, test_settings: Settings
                                                                     ) -> None:
    settings = test_settings.model_copy(update={"postgres_url": fresh_dsn,
                                                "postgres_statement_timeout_ms": 500})
    pg = await build_store(settings)
    store = pg.for_tenant("t")
    try:
        await store.ensure_version("1", DIM)
        async with await AsyncConnection.connect(fresh_dsn) as hung, hung.transaction():
            await hung.execute("SELECT pg_advisory_xact_lock(%s)", (ROLLOUT_LOCK,))  # and never commits
            began = time.monotonic()
            with pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"):
                await asyncio.wait_for(store.activate("1"), timeout=10)
            assert time.monotonic() - began < 5
        assert await store.active_version() is None  # nothing was applied
        await store.activate("1")  # and once the lock is free it goes through
    finally:
        await pg.close()


async def test_the_base_version_is_activated_on_a_fresh_database_only(fresh_pg: PgVectorStore) -> None:
    embedder = FakeServingEmbedder({"1", "7"}, dim=DIM)
    new_tenants = fresh_pg.for_tenant(NEW_TENANTS)
    await new_tenants.ensure_version("7", DIM)
    await new_tenants.activate("7")  # activated by another service after this one looked

    class LookedEarlier:
        """The store as a starting service saw it: nothing active yet."""

        def for_tenant(self, tenant: str) -> Any:
            lineage = fresh_pg.for_tenant(tenant)

            class Lineage:
                def __getattr__(self, name: str) -> Any:
                    return getattr(lineage, name)

                async def active_version(self) -> str | None:
                    return None

            return Lineage()

    await ensure_initial_version(LookedEarlier(), embedder)  # type: ignore[arg-type]
    assert await new_tenants.active_version() == "7"
    # A tenant without a lineage of its own serves what new tenants serve; its first change
    # starts its own lineage from it, and new tenants keep theirs.
    fresh = fresh_pg.for_tenant("newcomer")
    assert await fresh.active_version() == "7"
    assert await fresh.writable_versions() == await new_tenants.writable_versions()
    await fresh.ensure_version("1", DIM)
    await fresh.activate("1")
    assert await fresh.active_version() == "1" and await new_tenants.active_version() == "7"
