"""Rollout against the real stack: MLflow -> deployer -> Triton -> reindex-requested -> reindexer
-> pgvector blue/green switch, rollback, crash and resume of a backfill. Each version rolls out
in the lineage of the tenant it belongs to: another tenant's search, items and active version
are untouched."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import GroupCoordinatorNotAvailableError

from consumers.service import SERVICES
from core.adapters.pgvector import PgVectorStore
from core.adapters.task_store import TaskStore
from core.adapters.triton_embedder import TritonEmbedder
from core.adapters.triton_repository import model_versions, read_serving_decision
from core.base_model import default_base_model_dir
from core.bootstrap import build_model_control, build_task_store
from core.config import Settings
from core.domain import SearchQuery
from core.kafka_auth import kafka_client_options
from core.rollout import IndexIncomplete, UnknownVersion, activate_version, reindex_task_id
from core.search import search
from core.serving import REGISTERED_MODEL_NAME, registry_version, serving_version
from infra.process import Component
from infra.services import consumer_service
from kafka_ops.replay import reset_group
from producers.publisher import Publisher
from schemas.envelope import DEFAULT_TENANT
from schemas.model_published import ModelPublished
from schemas.reindex import ReindexRequested
from tests.conftest import _run
from tests.helpers import wait_for
from tests.integration.kafka_helpers import end_offsets, read_from

pytestmark = [pytest.mark.integration, pytest.mark.rollout]

DOCS = {
    "cat": "The domestic cat is a small carnivorous mammal that purrs and hunts mice.",
    "rocket": "A rocket engine burns propellant to produce thrust and reach orbit.",
    "bread": "Bread is baked from a dough of flour and water, leavened with yeast.",
    "python": "Python is a programming language with dynamic typing and garbage collection.",
}
FINAL = ("succeeded", "failed", "rejected")


# --- fixtures (module scope; the shared stack comes from tests/conftest.py) ---------------------
def _service(settings: Settings, name: str) -> Component:
    return consumer_service(settings, name, SERVICES.index(name))


def skip_history(settings: Settings, topic: str, group: str) -> None:
    """Start `group` at the end of `topic`, as an operator would with `flywheel replay --from now`:
    earlier modules' model-published and reindex-requested events are not this module's."""
    deadline = time.monotonic() + 60
    while True:
        try:
            asyncio.run(reset_group(settings.bootstrap_servers, topic, group, datetime.now(UTC)))
            return
        except GroupCoordinatorNotAvailableError:  # a fresh broker creates __consumer_offsets
            assert time.monotonic() < deadline, "no group coordinator"
            time.sleep(1)


@pytest.fixture(scope="module")
def deployer_service(
    kafka: Component, mongodb: Component, mlflow_server: Component, triton: Component, test_settings: Settings
) -> Iterator[Component]:
    skip_history(test_settings, "model-published", "deployer")
    yield from _run(_service(test_settings, "deployer"))


def reindexer_settings(settings: Settings) -> Settings:
    # Small batches and a rate limit, so a backfill lasts long enough to be observed and killed.
    return settings.model_copy(update={"reindex_batch_size": 4, "reindex_max_rate": 12.0})


@pytest.fixture(scope="module")
def reindexer_service(
    kafka: Component, postgres: Component, mongodb: Component, triton: Component, test_settings: Settings
) -> Iterator[Component]:
    skip_history(test_settings, "reindex-requested", "reindexer")
    yield from _run(_service(reindexer_settings(test_settings), "reindexer"))


@pytest_asyncio.fixture(scope="module")
async def tasks(mongodb: Component, test_settings: Settings) -> AsyncIterator[TaskStore]:
    store = await build_task_store(test_settings)
    yield store
    await store.close()


@pytest_asyncio.fixture(scope="module", autouse=True)
async def restore_active_version(postgres: Component, test_settings: Settings) -> AsyncIterator[None]:
    """Other modules assume the base version serves search: put it back afterwards."""
    yield
    store = await PgVectorStore.connect(test_settings.postgres_dsn)
    try:
        lineage = store.for_tenant(DEFAULT_TENANT)
        if await lineage.active_version() not in (None, "1"):
            await lineage.activate("1")
    finally:
        await store.close()


# --- helpers ----------------------------------------------------------------------------------
def register_model(settings: Settings, model_dir: Path) -> tuple[str, int, str, str]:
    """Log `model_dir` as a run's artifacts and register it; (serving version, registry version,
    artifact URI, run id)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri=settings.mlflow_uri)
    experiment = client.get_experiment_by_name("rollout-tests")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("rollout-tests")
    run = client.create_run(experiment_id)
    client.log_artifacts(run.info.run_id, str(model_dir), "model")
    client.set_terminated(run.info.run_id)
    with contextlib.suppress(MlflowException):  # registered by an earlier test
        client.create_registered_model(REGISTERED_MODEL_NAME)
    uri = f"{run.info.artifact_uri}/model"
    registered = client.create_model_version(REGISTERED_MODEL_NAME, uri, run_id=run.info.run_id)
    number = int(registered.version)
    return serving_version(number), number, uri, run.info.run_id


def copy_base_model(target: Path) -> Path:
    shutil.copytree(default_base_model_dir(), target, ignore=shutil.ignore_patterns(".git*", "README.md"))
    return target


async def wait_task(tasks: TaskStore, task_id: str, timeout_s: float = 420) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        task = await tasks.get(task_id)
        if task is not None and task["status"] in FINAL:
            return task
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id} not finished in time: {task}")
        await asyncio.sleep(0.5)


async def reindex_requests(settings: Settings, version: str) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(
        "reindex-requested", **kafka_client_options(), bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest", group_id=None,
    )
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            if not batch and found:
                break
            for records in batch.values():
                found += [
                    ReindexRequested.model_validate_json(r.value).model_dump()
                    for r in records if r.key == version.encode() and r.value
                ]
    finally:
        await consumer.stop()
    return found


async def placed_version(settings: Settings) -> str:
    """A version served by Triton but without an index: placed in the repository and loaded."""
    control = build_model_control(settings)
    try:
        existing = model_versions(settings.triton_repository, settings.triton_model_name)
        # Far above the versions training registers, so a later deploy never meets it.
        version = str(max(existing) + 100)
        await asyncio.to_thread(control.place_version, int(version), default_base_model_dir())
        await control.load()
        assert await control.is_ready(version)
    finally:
        await control.close()
    # The same architecture was timed when version 1 loaded in this server: this version took
    # those speeds and only checked quality.
    decision = read_serving_decision(settings.triton_repository, settings.triton_model_name, version)
    assert decision is not None and decision["speeds_from"].isdigit(), decision
    assert decision["passed"][decision["form"]] is True and "pass_seconds" not in decision
    return version


async def publish_docs(publisher: Publisher, tenant: str, version: int = 1, suffix: str = "") -> None:
    await publisher.publish_many("content-upserted", [
        {"id": f"{id_}{suffix}", "title": id_, "text": text, "version": version, "tenant": tenant}
        for id_, text in DOCS.items()
    ])


async def chunked_items(store: PgVectorStore, version: str) -> dict[tuple[str, str], int]:
    async with store.pool.connection() as conn:
        rows = await (await conn.execute(
            f"SELECT tenant, item_id, max(item_version) FROM chunks_v{int(version)} GROUP BY 1, 2"
        )).fetchall()
    return {(r[0], r[1]): int(r[2]) for r in rows}


async def all_items(store: PgVectorStore) -> dict[tuple[str, str], int]:
    async with store.pool.connection() as conn:
        rows = await (await conn.execute("SELECT tenant, id, version FROM items")).fetchall()
    return {(r[0], r[1]): int(r[2]) for r in rows}


async def chunk_counts(store: PgVectorStore, version: str) -> dict[tuple[str, str], int]:
    async with store.pool.connection() as conn:
        rows = await (await conn.execute(
            f"SELECT tenant, item_id, count(*) FROM chunks_v{int(version)} GROUP BY 1, 2"
        )).fetchall()
    return {(r[0], r[1]): int(r[2]) for r in rows}


# --- deployer ---------------------------------------------------------------------------------
async def test_a_broken_artifact_fails_the_deploy_and_the_active_version_keeps_serving(
    deployer_service: Component, publisher: Publisher, tasks: TaskStore, store: PgVectorStore,
    embedder: TritonEmbedder, triton: Component, test_settings: Settings, tmp_path: Path,
) -> None:
    broken = copy_base_model(tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"not a tensor file")
    version, registry, uri, run_id = await asyncio.to_thread(register_model, test_settings, broken)
    active = await store.active_version(DEFAULT_TENANT)

    await publisher.publish("model-published", ModelPublished(
        model_version=version, registry_version=registry, artifact_uri=uri, run_id=run_id))
    task = await wait_task(tasks, f"deploy-{version}")
    assert task["status"] == "failed", task
    assert task["stage"] == "loading" and task["error"], task

    assert await store.active_version(DEFAULT_TENANT) == active
    repo, name = test_settings.triton_repository, test_settings.triton_model_name
    assert int(version) not in model_versions(repo, name)
    vectors = (await embedder.embed(["still serving"], active or "1")).vectors
    assert vectors.shape == (1, 384)
    assert await reindex_requests(test_settings, version) == []
    # Triton forgot the failed version: the server is ready again (readiness probes pass).
    health = await asyncio.to_thread(triton.check)
    assert health.healthy, health.detail


async def test_a_model_published_the_registry_does_not_hold_is_parked_and_never_deployed(
    deployer_service: Component, publisher: Publisher, tasks: TaskStore, test_settings: Settings,
    tmp_path: Path,
) -> None:
    """Whoever could write model-published still cannot make the deployer fetch an artifact the
    MLflow registry does not hold for that version: the event is parked with the reason."""
    version, registry, uri, run_id = await asyncio.to_thread(
        register_model, test_settings, copy_base_model(tmp_path / "model"))
    unknown = registry + 1000
    forged = [
        ModelPublished(model_version=version, registry_version=registry, artifact_uri="file:///tmp/evil",
                       run_id=run_id),
        ModelPublished(model_version=serving_version(unknown), registry_version=unknown, artifact_uri=uri,
                       run_id=run_id),
    ]
    bootstrap = test_settings.bootstrap_servers
    start = await end_offsets(bootstrap, "model-published.dlq")
    for event in forged:
        await publisher.publish("model-published", event)
    reasons: dict[str, str] = {}

    async def parked() -> bool:
        for record in await read_from(bootstrap, "model-published.dlq", start):
            headers = {k: v.decode() for k, v in record.headers}
            reasons[record.key.decode()] = headers.get("dlq-error", "")
        return all(e.model_version in reasons for e in forged)
    await wait_for(parked, 120, what="both forged events parked")
    assert "file:///tmp/evil" in reasons[version] and uri in reasons[version], reasons
    assert f"no version {unknown}" in reasons[serving_version(unknown)], reasons
    for event in forged:
        assert await tasks.get(f"deploy-{event.model_version}") is None
    served = model_versions(test_settings.triton_repository, test_settings.triton_model_name)
    assert int(version) not in served


async def test_deploy_then_blue_green_reindex_then_rollback(
    deployer_service: Component, reindexer_service: Component, indexer_service: Component,
    publisher: Publisher, tasks: TaskStore, store: PgVectorStore, embedder: TritonEmbedder,
    test_settings: Settings, tmp_path: Path,
) -> None:
    # The version belongs to tenant `first` (its sessions trained it); `second` stays on version 1.
    first, second = f"t-{uuid.uuid4().hex[:8]}", f"t-{uuid.uuid4().hex[:8]}"
    await publish_docs(publisher, first)
    await publisher.delete_content("python", tenant=first)
    await publish_docs(publisher, second)

    async def indexed() -> bool:
        return await store.count_items(first) == 3 and await store.count_items(second) == 4
    await wait_for(indexed)
    assert await store.active_version(first) == "1" == await store.active_version(second)
    lineage, other = store.for_tenant(first), store.for_tenant(second)
    seconds_state = (await other.list_versions(), await chunked_items(store, "1"))

    version, registry, uri, run_id = await asyncio.to_thread(
        register_model, test_settings, copy_base_model(tmp_path / "model"))
    await publisher.publish("model-published", ModelPublished(
        model_version=version, registry_version=registry, artifact_uri=uri, run_id=run_id,
        metrics={"ndcg_at_10": 0.7}, base_version="1", tenant=first, fusion_weight=0.7))
    reindex_id = reindex_task_id(version, first)

    deployed = await wait_task(tasks, f"deploy-{version}")
    assert deployed["status"] == "succeeded", deployed
    assert deployed["details"]["min_cosine"] >= 0.999
    # The form Triton serves it in, as the version chose when loaded: on the task and in MLflow.
    serving = deployed["details"]["serving"]
    assert serving["form"] in ("fp32", "bf16", "fp16", "onnx", "onnx-int8"), serving
    assert serving["passed"][serving["form"]], serving
    import mlflow

    logged = mlflow.MlflowClient(tracking_uri=test_settings.mlflow_uri).get_run(run_id).data
    assert logged.tags["serving.form"] == serving["form"] and "serving_fp32_texts_per_s" in logged.metrics
    assert (await embedder.embed(["a pet that purrs"], version)).vectors.shape == (1, 384)
    assert [r["model_version"] for r in await reindex_requests(test_settings, version)] == [version]

    # While the backfill runs, search stays on version 1 and new content of `first` lands in both
    # of its indexes; `second`'s new content only in version 1, the one it serves.
    async def backfilling() -> bool:
        task = await tasks.get(reindex_id)
        return task is not None and task["stage"] in ("backfilling", "reconciling", "activating", "done")
    await wait_for(backfilling, 300)
    await publish_docs(publisher, first, suffix="-new")
    await publish_docs(publisher, second, suffix="-new")
    if {r["version"]: r["status"] for r in await lineage.list_versions()}[version] == "building":
        with pytest.raises(IndexIncomplete):
            await activate_version(lineage, version)

    task = await wait_task(tasks, reindex_id)
    assert task["status"] == "succeeded", task
    assert task["details"]["previous_version"] == "1" and task["progress"] == 1.0

    assert await store.active_version(first) == version and await store.active_version(second) == "1"
    assert (await store.owners())[version] == first

    async def new_ones_indexed() -> bool:
        return await store.count_items(first) == 7 and await store.count_items(second) == 8
    await wait_for(new_ones_indexed)
    items = await all_items(store)
    mine = {k: v for k, v in items.items() if k[0] == first}
    assert len(mine) == 7

    async def complete() -> bool:
        return (await chunked_items(store, version)).items() >= mine.items()
    await wait_for(complete, 60)
    # Only `first`'s items were embedded by its version; nothing deleted came back.
    assert (await chunked_items(store, version)).keys() == mine.keys()
    result = await search(SearchQuery("a pet that purrs", 2, first), lineage, embedder)
    assert result.model_version == version and result.hits[0].id in ("cat", "cat-new")
    # The fusion weight its training chose came with model-published and is the version's now.
    assert {r["version"]: r["fusion_weight"] for r in await lineage.list_versions()}[version] == 0.7
    hybrid = await search(SearchQuery("a pet that purrs", 2, first, mode="hybrid"), lineage, embedder)
    assert hybrid.model_version == version and hybrid.fusion_weight == 0.7
    # `second` is served by its own version, which holds its items, old and new.
    result = await search(SearchQuery("a pet that purrs", 2, second), other, embedder)
    assert result.model_version == "1" and {h.id for h in result.hits} == {"cat", "cat-new"}
    assert (await other.list_versions()) == seconds_state[0]
    assert version not in {row["version"] for row in await other.list_versions()}
    with pytest.raises(UnknownVersion):  # not second's to activate
        await activate_version(other, version)

    # Another tenant asking to reindex `first`'s version is refused: nothing built, nothing switched.
    await publisher.publish("reindex-requested", ReindexRequested(model_version=version, tenant=second))

    # Rollback: immediate, and the previous index is complete (it kept receiving writes).
    began = time.monotonic()
    rolled = await activate_version(lineage, "1", is_served=embedder.ready)
    assert rolled.previous == version and time.monotonic() - began < 2
    result = await search(SearchQuery("a pet that purrs", 2, first), lineage, embedder)
    assert result.model_version == "1" and {h.id for h in result.hits} == {"cat", "cat-new"}
    assert await store.active_version(second) == "1" and (await other.list_versions()) == seconds_state[0]

    # A redelivered reindex request for the finished version changes nothing.
    await publisher.publish("reindex-requested", ReindexRequested(model_version=version, tenant=first))
    await asyncio.sleep(5)
    again = await tasks.get(reindex_id)
    assert again is not None and again["updated_at"] == task["updated_at"]
    assert await store.active_version(first) == "1"
    assert await tasks.get(reindex_task_id(version, second)) is None
    assert second not in {k[0] for k in await chunked_items(store, version)}


async def test_a_backfill_killed_midway_resumes_without_gaps_or_duplicates(
    reindexer_service: Component, indexer_service: Component, publisher: Publisher,
    tasks: TaskStore, store: PgVectorStore, embedder: TritonEmbedder, test_settings: Settings,
) -> None:
    version = await placed_version(test_settings)
    more = f"t-{uuid.uuid4().hex[:8]}"
    for round_ in range(3):
        await publish_docs(publisher, more, suffix=f"-{round_}")

    async def indexed() -> bool:
        return await store.count_items(more) == 12
    await wait_for(indexed)

    await publisher.publish("reindex-requested", ReindexRequested(model_version=version, activate=False,
                                                                  tenant=more))
    reindex_id = reindex_task_id(version, more)

    async def midway() -> bool:
        task = await tasks.get(reindex_id)
        return task is not None and task["details"].get("consumed", 0) > 0
    await wait_for(midway, 300)
    pid = reindexer_service.pid()
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)  # a crash: no shutdown, no commit of the request
    reindexer_service.stop()
    task = await tasks.get(reindex_id)
    assert task is not None and task["status"] == "running", task
    assert (await store.active_version(more)) == "1"

    reindexer_service.start()
    task = await wait_task(tasks, reindex_id)
    assert task["status"] == "succeeded", task
    assert task["details"]["consumed"] == task["details"]["total"]

    items = {k: v for k, v in (await all_items(store)).items() if k[0] == more}
    built = await chunked_items(store, version)
    assert built == items  # the tenant's items: no gaps, nothing stale, nothing deleted, no one else's
    base = {k: v for k, v in (await chunk_counts(store, "1")).items() if k[0] == more}
    assert await chunk_counts(store, version) == base  # no duplicates
    versions = {row["version"]: row["status"] for row in await store.list_versions(more)}
    assert versions[version] == "retired" and await store.active_version(more) == "1"


async def test_a_full_cycle_from_clicks_to_search_served_by_the_new_version(
    trainer_service: Component, sessions_service: Component, indexer_service: Component,
    deployer_service: Component, reindexer_service: Component, publisher: Publisher,
    store: PgVectorStore, embedder: TritonEmbedder, session_store: Any, tasks: TaskStore,
    test_settings: Settings,
) -> None:
    """clicks -> sessions -> training (gate passed, MLflow) -> deploy to Triton -> reindex ->
    the new version active, and search answered by it."""
    from tests.integration.test_training import finished, training_data

    who = f"cycle-{uuid.uuid4().hex[:8]}"
    since = await training_data(publisher, store, session_store, who, 24)
    run_id = f"run-{uuid.uuid4().hex}"
    default_before = await store.active_version(DEFAULT_TENANT)
    await publisher.publish("training-requested", {
        "run_id": run_id, "tenant": who, "min_sessions": 10, "epochs": 1, "gate_margin": 0.05,
        "since": since.isoformat(), "until": (datetime.now(UTC) + timedelta(seconds=1)).isoformat()})
    trained = await finished(tasks, run_id)
    assert trained["status"] == "succeeded", trained
    version = trained["details"]["model_version"]

    deployed = await wait_task(tasks, f"deploy-{version}")
    assert deployed["status"] == "succeeded", deployed
    reindexed = await wait_task(tasks, reindex_task_id(version, who))
    assert reindexed["status"] == "succeeded", reindexed

    # The tenant whose sessions trained it serves it, and owns it; no other tenant moved.
    assert await store.active_version(who) == version and (await store.owners())[version] == who
    assert await store.active_version(DEFAULT_TENANT) == default_before
    result = await search(SearchQuery("anything at all", 3, who), store.for_tenant(who), embedder)
    assert result.model_version == version and result.hits
    # The fusion weight the run chose on its held-out queries is recorded with the version.
    chosen = trained["details"]["metrics"]["candidate"].get("fusion_weight")
    assert await store.fusion_weight(version) == chosen
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=test_settings.mlflow_uri)
    registered = client.get_model_version(REGISTERED_MODEL_NAME, str(registry_version(version)))
    assert registered.run_id and client.get_run(registered.run_id).info.status == "FINISHED"
