"""Deployer, reindexer and activation handlers over in-memory fakes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from consumers.deployer.handlers import SMOKE_TEXTS, DeployDeps, deploy
from consumers.reindexer.handlers import ReindexDeps, reindex
from core.chunking import Chunker, ChunkingConfig
from core.domain import ConcurrentChange, Expected
from core.rollout import (
    IndexFailed,
    IndexIncomplete,
    IndexStale,
    NotServed,
    UnknownVersion,
    activate_version,
)
from core.serving import registry_version, serving_version
from schemas.model_published import ModelPublished
from schemas.reindex import ReindexRequested
from tests.unit.rollout_fakes import (
    Crash,
    FakeLog,
    FakeModelServer,
    FakeReindexStore,
    FakeServingEmbedder,
    FakeTasks,
)
from tests.unit.test_indexer_handlers import WordTokenizer


def chunker() -> Chunker:
    return Chunker(WordTokenizer(), ChunkingConfig(max_tokens=64, overlap_tokens=2))


# --- the version convention ------------------------------------------------------------------
def test_serving_and_registry_versions() -> None:
    assert serving_version(1) == "2" and registry_version("2") == 1 and registry_version("1") is None
    with pytest.raises(ValueError):
        registry_version("latest")


# --- deployer -----------------------------------------------------------------------------------
def published(version: str = "2", registry: int = 1) -> ModelPublished:
    return ModelPublished(model_version=version, registry_version=registry, artifact_uri="runs:/r/model",
                          run_id="r", metrics={"ndcg_at_10": 0.5}, fusion_weight=0.3)


class DeployRig:
    def __init__(self, tmp_path: Path, *, broken: set[int] | None = None, drift: float = 0.0) -> None:
        self.tasks = FakeTasks()
        self.embedder = FakeServingEmbedder()
        self.server = FakeModelServer(self.embedder, broken)
        self.published: list[ReindexRequested] = []
        self.fetched: list[str] = []
        self.drift = drift

        def fetch(uri: str, dest: Path) -> Path:
            self.fetched.append(uri)
            dest.mkdir(parents=True)
            return dest

        def reference(model_dir: Path, texts: list[str]) -> np.ndarray:
            # The fake "registered model" embeds as version 2 does in the fake Triton.
            import asyncio

            vectors = asyncio.run(FakeServingEmbedder().embed(texts, "2")).vectors
            noisy = vectors + self.drift * np.ones_like(vectors)
            return np.asarray(noisy / np.linalg.norm(noisy, axis=1, keepdims=True), dtype=np.float32)

        async def publish(event: ReindexRequested) -> None:
            self.published.append(event)

        self.deps = DeployDeps(self.tasks, self.server, self.embedder, fetch, reference, publish,
                               tmp_path / "work", ready_timeout_s=2)


async def test_deploy_loads_checks_and_requests_the_reindex(tmp_path: Path) -> None:
    rig = DeployRig(tmp_path)
    task = await deploy(published(), rig.deps)
    assert task["status"] == "succeeded" and task["progress"] == 1.0, task
    assert task["details"]["min_cosine"] >= 0.999
    assert rig.server.has_version(2) and await rig.server.is_ready("1")
    assert [(e.model_version, e.activate, e.fusion_weight) for e in rig.published] == [("2", True, 0.3)]
    stages = [u["stage"] for _, u in rig.tasks.updates if "stage" in u]
    assert stages == ["validating", "downloading", "placing", "loading", "warming_up", "smoke_testing",
                      "requesting_reindex", "done"]
    # Warm-up and the smoke test went to version 2 only.
    assert {v for texts, v in rig.embedder.calls if texts == SMOKE_TEXTS} == {"2"}
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())


async def test_a_redelivered_event_of_a_succeeded_deploy_does_nothing(tmp_path: Path) -> None:
    rig = DeployRig(tmp_path)
    event = published()
    await deploy(event, rig.deps)
    loads = rig.server.loads
    again = await deploy(event, rig.deps)
    assert again["status"] == "succeeded"
    assert rig.fetched == ["runs:/r/model"] and rig.server.loads == loads and len(rig.published) == 1


async def test_a_version_triton_cannot_load_fails_and_is_withdrawn(tmp_path: Path) -> None:
    rig = DeployRig(tmp_path, broken={2})
    task = await deploy(published(), rig.deps)
    assert task["status"] == "failed" and task["stage"] == "loading"
    assert "failed to load" in task["error"]
    assert not rig.server.has_version(2) and await rig.server.is_ready("1")
    assert rig.published == []


async def test_a_smoke_test_mismatch_fails_the_deploy(tmp_path: Path) -> None:
    rig = DeployRig(tmp_path, drift=0.5)
    task = await deploy(published(), rig.deps)
    assert task["status"] == "failed" and task["stage"] == "smoke_testing"
    assert "cosine" in task["error"]
    assert not rig.server.has_version(2) and rig.embedder.served == {"1"} and rig.published == []


async def test_a_failed_deploy_is_retried_when_redelivered(tmp_path: Path) -> None:
    rig = DeployRig(tmp_path, broken={2})
    assert (await deploy(published(), rig.deps))["status"] == "failed"
    rig.server.broken.clear()
    assert (await deploy(published(), rig.deps))["status"] == "succeeded"


async def test_inconsistent_versions_are_refused(tmp_path: Path) -> None:
    rig = DeployRig(tmp_path)
    task = await deploy(published("3", registry=1), rig.deps)
    assert task["status"] == "failed" and "core.serving" in task["error"]
    base = await deploy(published("1", registry=1), DeployRig(tmp_path).deps)
    assert base["status"] == "failed" and ">= 2" in base["error"]
    assert rig.fetched == []


# --- reindexer ----------------------------------------------------------------------------------
class ReindexRig:
    def __init__(self) -> None:
        self.tasks = FakeTasks()
        self.store = FakeReindexStore(tenant="a")
        self.embedder = FakeServingEmbedder({"1", "2"})
        self.log = FakeLog()

    def deps(self, **extra: object) -> ReindexDeps:
        return ReindexDeps(self.tasks, self.store, self.embedder, chunker(), self.log.open,
                           batch_size=2, progress_every_s=0, ready_timeout_s=0.1, **extra)  # type: ignore[arg-type]

    async def live_index(self) -> None:
        """What the live indexer did: everything in the log applied to the writable versions."""
        from core.indexing import index_batch, parse_records

        records = [r for p in sorted(self.log.partitions) for r in self.log.partitions[p]]
        parsed, _ = parse_records(tuple(records))
        await index_batch([op for _, op in parsed], self.store, self.embedder, chunker())


async def test_reindex_backfills_its_tenant_s_items_only_and_switches_at_the_end() -> None:
    rig = ReindexRig()
    for i in range(5):
        rig.log.upsert("a", f"doc{i}", f"text number {i}", 1, partition=i % 2)
    rig.log.upsert("b", "doc0", "another tenant", 1, partition=1)
    await rig.live_index()
    assert set(rig.store.chunks["1"]) == set(rig.store.items)

    task = await reindex(ReindexRequested(tenant="a", model_version="2", fusion_weight=0.3), rig.deps())
    assert task["status"] == "succeeded" and task["progress"] == 1.0, task
    assert task["id"] == "reindex-2-a"  # one reindex per version per tenant
    assert await rig.store.fusion_weight("2") == 0.3  # recorded with the version
    # Tenant a's items only: b's item is neither replayed into nor reconciled into a's version.
    assert set(rig.store.chunks["2"]) == {("a", f"doc{i}") for i in range(5)} and len(rig.store.items) == 6
    assert not any("another tenant" in text for texts, v in rig.embedder.calls if v == "2" for text in texts)
    assert await rig.store.active_version() == "2" and rig.store.status["1"] == "retired"
    assert task["details"]["previous_version"] == "1" and task["details"]["total"] == 6
    # Replayed events were embedded with version 2 only.
    assert {v for _, v in rig.embedder.calls[-3:]} == {"2"}
    # The rollback target keeps receiving writes.
    assert await rig.store.writable_versions() == ["1", "2"]


async def test_redelivered_request_of_a_finished_reindex_does_nothing() -> None:
    rig = ReindexRig()
    rig.log.upsert("a", "x", "some text", 1)
    await rig.live_index()
    await reindex(ReindexRequested(tenant="a", model_version="2"), rig.deps())
    await activate_version(rig.store, "1")  # rolled back meanwhile
    calls = len(rig.embedder.calls)
    task = await reindex(ReindexRequested(tenant="a", model_version="2"), rig.deps())
    assert task["status"] == "succeeded" and len(rig.embedder.calls) == calls
    assert await rig.store.active_version() == "1"


async def test_a_crashed_backfill_resumes_from_committed_offsets() -> None:
    rig = ReindexRig()
    for i in range(8):
        rig.log.upsert("a", f"doc{i}", f"text {i}", 1, partition=0)
    await rig.live_index()
    rig.log.crash_after_commits = 2
    with pytest.raises(Crash):
        await reindex(ReindexRequested(tenant="a", model_version="2"),
                      rig.deps(is_transient=lambda e: isinstance(e, Crash)))
    assert rig.tasks.tasks["reindex-2-a"]["status"] == "running"
    assert await rig.store.active_version() == "1" and rig.store.status["2"] == "building"
    half = len(rig.store.chunks["2"])
    assert 0 < half < 8
    embedded_before = sum(len(t) for t, v in rig.embedder.calls if v == "2")

    rig.log.crash_after_commits = None
    task = await reindex(ReindexRequested(tenant="a", model_version="2"), rig.deps())
    assert task["status"] == "succeeded" and set(rig.store.chunks["2"]) == set(rig.store.items)
    # Resumed from the committed offsets; the batch applied but not committed is replayed
    # without embedding it again (its chunks are there).
    embedded = sum(len(t) for t, v in rig.embedder.calls if v == "2") - embedded_before
    assert embedded == 8 - half + 1  # and the dimension probe
    assert rig.store.chunks["2"]["a", "doc7"].item.version == 1


async def test_replay_neither_resurrects_deleted_items_nor_drops_recreated_ones() -> None:
    rig = ReindexRig()
    rig.log.upsert("a", "gone", "deleted later", 1)
    rig.log.delete("a", "gone")
    rig.log.upsert("a", "back", "first life", 1)
    rig.log.delete("a", "back")
    rig.log.upsert("a", "back", "second life", 2)
    rig.log.upsert("a", "old", "old text", 1)
    rig.log.upsert("a", "old", "new text", 2)
    await rig.live_index()
    task = await reindex(ReindexRequested(tenant="a", model_version="2"), rig.deps())
    assert task["status"] == "succeeded"
    assert set(rig.store.items) == {("a", "back"), ("a", "old")}
    assert set(rig.store.chunks["2"]) == {("a", "back"), ("a", "old")}
    assert set(rig.store.chunks["1"]) == {("a", "back"), ("a", "old")}  # the active index untouched
    assert rig.store.chunks["2"]["a", "back"].item.version == 2


async def test_items_the_replay_missed_are_reconciled_from_the_store() -> None:
    rig = ReindexRig()
    rig.log.upsert("a", "x", "in the log", 1)
    await rig.live_index()
    # An item the live indexer stored while the table was created, not (yet) in the replay range.
    from core.domain import ChunkVectors, Item

    item = Item("a", "late", "Late", "arrived late", {}, 1)
    vectors = (await rig.embedder.embed(["arrived late"], "1")).vectors
    await rig.store.apply({"1": [ChunkVectors(item, ["arrived late"], vectors)]}, [])
    task = await reindex(ReindexRequested(tenant="a", model_version="2"), rig.deps())
    assert task["status"] == "succeeded" and task["details"]["reconciled"] == 1
    assert set(rig.store.chunks["2"]) == {("a", "x"), ("a", "late")}


async def test_a_version_triton_does_not_serve_fails_without_touching_the_store() -> None:
    rig = ReindexRig()
    task = await reindex(ReindexRequested(tenant="a", model_version="3"), rig.deps())
    assert task["status"] == "failed" and "deploy it first" in task["error"]
    assert "3" not in rig.store.status and await rig.store.active_version() == "1"


async def test_without_activate_the_version_is_complete_but_not_active() -> None:
    rig = ReindexRig()
    rig.log.upsert("a", "x", "text", 1)
    await rig.live_index()
    task = await reindex(ReindexRequested(tenant="a", model_version="2", activate=False), rig.deps())
    assert task["status"] == "succeeded" and await rig.store.active_version() == "1"
    assert rig.store.status["2"] == "retired"
    assert (await activate_version(rig.store, "2")).previous == "1"


async def test_a_rollback_while_the_reindex_ran_is_not_overridden() -> None:
    rig = ReindexRig()
    rig.embedder.served.add("3")
    for i in range(4):
        rig.log.upsert("a", f"doc{i}", f"text {i}", 1)
    await rig.live_index()
    # 2 active, 1 the rollback target
    await reindex(ReindexRequested(tenant="a", model_version="2"), rig.deps())

    async def operator_rolls_back() -> None:
        await activate_version(rig.store, "1")

    rig.log.after_commit = operator_rolls_back
    task = await reindex(ReindexRequested(tenant="a", model_version="3"), rig.deps())
    assert task["details"]["started_from"] == "2"
    assert await rig.store.active_version() == "1"  # the rollback stands
    assert task["status"] == "succeeded" and task["details"]["activated"] is False
    assert "active version changed from 2 to 1" in task["details"]["note"]
    # complete, not serving: the new rollback target, which an operator may activate
    assert rig.store.status["3"] == "retired" and "3" in await rig.store.writable_versions()
    assert (await activate_version(rig.store, "3")).previous == "1"


async def test_a_failed_reindex_marks_its_version_failed_and_a_new_request_resumes_it() -> None:
    rig = ReindexRig()
    rig.log.upsert("a", "x", "text", 1)
    rig.log.upsert("a", "y", "more text", 1)
    await rig.live_index()
    rig.log.crash_after_commits = 0
    # Crash is not transient
    task = await reindex(ReindexRequested(tenant="a", model_version="2"), rig.deps())
    assert task["status"] == "failed" and task["stage"] == "backfilling"
    assert rig.store.status["2"] == "failed" and "reindex failed at backfilling" in rig.store.reasons["2"]
    assert await rig.store.writable_versions() == ["1"]  # nothing writes to it any more
    with pytest.raises(IndexFailed, match="failed to index"):
        await activate_version(rig.store, "2")

    rig.log.crash_after_commits = None
    task = await reindex(ReindexRequested(tenant="a", model_version="2"), rig.deps())
    assert task["status"] == "succeeded" and await rig.store.active_version() == "2"
    assert set(rig.store.chunks["2"]) == set(rig.store.items)


async def test_a_reindex_that_keeps_failing_transiently_is_abandoned_and_its_version_failed() -> None:
    rig = ReindexRig()
    rig.log.upsert("a", "x", "text", 1)
    await rig.live_index()
    rig.log.crash_after_commits = 0
    deps = rig.deps(is_transient=lambda e: isinstance(e, Crash), max_attempts=3)
    for attempt in (1, 2):
        with pytest.raises(Crash):  # retried: the request is redelivered
            await reindex(ReindexRequested(tenant="a", model_version="2"), deps)
        assert rig.tasks.tasks["reindex-2-a"]["details"]["transient_failures"] == attempt
        assert rig.store.status["2"] == "building"
    task = await reindex(ReindexRequested(tenant="a", model_version="2"), deps)  # the third: given up
    assert task["status"] == "failed" and "abandoned after 3 attempts" in task["error"]
    assert rig.store.status["2"] == "failed" and await rig.store.writable_versions() == ["1"]
    rig.log.crash_after_commits = None  # requested again later: counted afresh, and it succeeds
    assert (await reindex(ReindexRequested(tenant="a", model_version="2"), deps))["status"] == "succeeded"


# --- activation -----------------------------------------------------------------------------
async def test_activation_refuses_unknown_building_and_unserved_versions() -> None:
    store = FakeReindexStore()
    with pytest.raises(UnknownVersion):
        await activate_version(store, "7")
    await store.ensure_version("2", 8)
    with pytest.raises(IndexIncomplete):
        await activate_version(store, "2")
    await store.finish_version("2")

    async def not_served(version: str) -> bool:
        return False

    with pytest.raises(NotServed):
        await activate_version(store, "2", is_served=not_served)
    result = await activate_version(store, "2")
    assert (result.version, result.previous, result.changed) == ("2", "1", True)
    back = await activate_version(store, "1")
    assert back.previous == "2" and await store.active_version() == "1"


async def test_only_the_version_retired_last_can_be_activated_again() -> None:
    store = FakeReindexStore()  # version 1 active
    for version in ("2", "3"):
        await store.ensure_version(version, 8)
        await store.finish_version(version)
        await activate_version(store, version)
    # 3 active; 2 retired last (kept current); 1 retired before it and no longer written to.
    assert set(await store.writable_versions()) == {"2", "3"}
    with pytest.raises(IndexStale, match="model version 1 stopped receiving new content"):
        await activate_version(store, "1")
    assert (await activate_version(store, "2")).previous == "3"  # the rollback
    assert (await activate_version(store, "3")).previous == "2"  # and forward again


async def test_an_activation_decided_from_a_state_that_changed_is_refused() -> None:
    store = FakeReindexStore()
    await store.ensure_version("2", 8)
    await store.finish_version("2")
    decided = Expected("1", "retired")  # activating 2 was decided while 2 was kept current
    await store.ensure_version("3", 8)
    await store.finish_version("3")  # meanwhile 3 was retired after it
    with pytest.raises(ConcurrentChange, match="stopped receiving new content"):
        await store.activate("2", decided)
    await activate_version(store, "3")  # and then activated
    with pytest.raises(ConcurrentChange, match="the active version is 3, not 1 as expected"):
        await activate_version(store, "2", expected_active="1")  # an operator who saw 1 active
    with pytest.raises(ConcurrentChange, match="changed from 1 to 3"):
        await store.activate("1", Expected("1", "active"))
    assert await store.active_version() == "3"
