"""clicks -> sessions service -> MongoDB; training-requested -> trainer service -> MLflow ->
model-published (or a rejected task), against the real components."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from mlflow.tracking import MlflowClient

from core.adapters.dataset_store import DatasetStore
from core.adapters.pgvector import PgVectorStore
from core.adapters.session_store import MongoSessionStore
from core.adapters.task_store import TaskStore
from core.config import Settings
from core.datasets import parse_jsonl
from core.fusion import WEIGHT_GRID, weight_metric
from core.kafka_auth import kafka_client_options
from core.serving import REGISTERED_MODEL_NAME
from core.sessions import fold
from infra.process import Component
from producers.publisher import Publisher
from schemas.codec import validate
from tests.helpers import wait_for
from tests.integration.flywheel_data import CODEWORDS, ITEMS, synthetic_sessions
from tests.integration.kafka_helpers import end_offsets, read_from

pytestmark = pytest.mark.integration


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


async def caught_up(settings: Settings, group: str, topic: str, timeout_s: float = 60.0) -> None:
    """Wait until `group` has committed every record of `topic` published so far."""
    ends = await end_offsets(settings.bootstrap_servers, topic)
    admin = AIOKafkaAdminClient(**kafka_client_options(), bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        async def done() -> bool:
            committed = await admin.list_consumer_group_offsets(group)
            return all(
                (meta.offset if (meta := committed.get(TopicPartition(topic, p))) else 0) >= end
                for p, end in ends.items()
            )
        await wait_for(done, timeout_s)
    finally:
        await admin.close()


def click_events(count: int, who: str, prefix: str) -> list[dict[str, Any]]:
    """The synthetic sessions with fixed event ids, so they can be published again verbatim."""
    events = []
    for session in synthetic_sessions(count, who, prefix):
        for event in session:
            at = datetime.now(UTC).isoformat()
            events.append({**event, "event_id": str(uuid.uuid4()), "occurred_at": at})
    return events


async def sessions_of(sessions: MongoSessionStore, who: str) -> dict[str, dict[str, Any]]:
    return {doc["_id"]: doc async for doc in sessions.sessions.find({"tenant": who})}


# --- the MongoDB session store -----------------------------------------------------------
async def test_session_store_on_the_real_server(session_store: MongoSessionStore) -> None:
    who = tenant()
    now = datetime.now(UTC)
    event = validate("clicks", {"type": "search", "session_id": "s", "tenant": who, "query": "q",
                                "model_version": "1", "results": [{"id": "a", "rank": 1, "score": 0.5}]})
    doc, _ = fold(None, [event], now)  # type: ignore[list-item]
    assert await session_store.save(doc, None)
    assert not await session_store.save(doc, None)  # exists: a concurrent insert lost
    stored = (await session_store.get_many([doc["_id"], "nope"]))[doc["_id"]]
    assert stored["revision"] == 1
    assert stored["searches"][0]["results"] == [{"id": "a", "rank": 1, "score": 0.5}]
    assert await session_store.save(stored, 1)
    assert not await session_store.save(stored, 1)  # stale revision
    streamed = [d async for d in session_store.iter_sessions(now - timedelta(days=1), batch_size=2)
                if d["tenant"] == who]
    assert [d["_id"] for d in streamed] == [doc["_id"]] and "event_ids" not in streamed[0]
    assert await session_store.count_created_since(now - timedelta(seconds=1)) >= 1
    # Expiry: the TTL index where the server has them, the purge where it does not (FerretDB).
    old = {**doc, "_id": f"{who}/old", "session_id": "old", "last_event_at": now - timedelta(days=400)}
    assert await session_store.save(old, None)
    assert await session_store.purge_expired(now) >= 1
    assert await session_store.get(f"{who}/old") is None and await session_store.get(doc["_id"]) is not None


# --- the sessions service ----------------------------------------------------------------
async def test_clicks_fold_into_one_document_per_session_and_redelivery_changes_nothing(
    sessions_service: Component, publisher: Publisher, session_store: MongoSessionStore,
    test_settings: Settings,
) -> None:
    who = tenant()
    events = click_events(12, who, "s")
    await publisher.publish_many("clicks", events)

    async def folded() -> bool:
        docs = await sessions_of(session_store, who)
        return len(docs) == 12 and all(d["searches"] and d["searches"][0]["clicks"] for d in docs.values())
    await wait_for(folded)
    before = await sessions_of(session_store, who)
    doc = before[f"{who}/s-0"]
    search = doc["searches"][0]
    assert search["query"] == "drovak" and search["model_version"] == "1" and len(search["results"]) == 8
    assert [c["content_id"] for c in search["clicks"]] == ["tulip"] and doc["tenant"] == who
    assert len(doc["event_ids"]) == 2 and doc["first_event_at"] <= doc["last_event_at"]

    await publisher.publish_many("clicks", events)  # the same events again
    await caught_up(test_settings, "sessions", "clicks")
    assert await sessions_of(session_store, who) == before

    await publisher.publish("clicks", {"type": "click", "session_id": "s-0", "tenant": who,
                                       "content_id": "cat", "rank": 1})
    async def second_click() -> bool:
        return len((await session_store.get(f"{who}/s-0") or {})["searches"][0]["clicks"]) == 2
    await wait_for(second_click)


# --- the trainer service -----------------------------------------------------------------
async def publish_items(publisher: Publisher, who: str) -> None:
    await publisher.publish_many("content-upserted", [
        {"id": id_, "title": title, "text": text, "version": 1, "tenant": who}
        for id_, (title, text) in ITEMS.items()
    ])


async def training_data(
    publisher: Publisher, store: PgVectorStore, session_store: MongoSessionStore, who: str, count: int
) -> datetime:
    """Items indexed and `count` sessions folded for tenant `who`; the start of their window."""
    since = datetime.now(UTC) - timedelta(seconds=1)
    await publish_items(publisher, who)
    await publisher.publish_many("clicks", click_events(count, who, "train"))

    async def ready() -> bool:
        # Each session's click folded too, not only its search: the split reads clicked sessions.
        docs = await sessions_of(session_store, who)
        return (await store.count_items(who) == len(ITEMS) and len(docs) == count
                and all(s["clicks"] for d in docs.values() for s in d["searches"]))
    await wait_for(ready, 120)
    return since


async def test_the_linear_maps_corpus_is_the_same_sample_of_the_tenants_items_each_time(
    indexer_service: Component, publisher: Publisher, store: PgVectorStore,
) -> None:
    from core.adapters.item_texts import PgItemTexts

    who = tenant()
    await indexed_items(publisher, store, who)
    items = PgItemTexts(store)
    first = await items.sample(who, 5)
    assert len(first) == 5 and first == await items.sample(who, 5)
    assert first == await items.texts(who, list(first))  # the texts the indexer embeds
    assert len(await items.sample(who, 10_000)) == len(ITEMS) and await items.sample("nobody", 5) == {}


async def indexed_items(publisher: Publisher, store: PgVectorStore, who: str) -> None:
    """ITEMS published for tenant `who` and waited for until all are indexed."""
    await publish_items(publisher, who)

    async def indexed() -> bool:
        return await store.count_items(who) == len(ITEMS)
    await wait_for(indexed, 120)


async def finished(tasks: TaskStore, run_id: str, timeout_s: float = 420) -> dict[str, Any]:
    async def final() -> bool:
        task = await tasks.get(run_id)
        return task is not None and task["status"] in ("succeeded", "failed", "rejected")
    await wait_for(final, timeout_s, every_s=1.0)
    task = await tasks.get(run_id)
    assert task is not None
    return task


def registered(settings: Settings) -> list[Any]:
    client = MlflowClient(tracking_uri=settings.mlflow_uri)
    try:
        return list(client.search_model_versions(f"name='{REGISTERED_MODEL_NAME}'"))
    except Exception:
        return []


@pytest.fixture(scope="module")
def training_window() -> dict[str, Any]:
    return {}


async def test_training_publishes_a_better_model_once(
    indexer_service: Component, sessions_service: Component, trainer_service: Component,
    publisher: Publisher, store: PgVectorStore, session_store: MongoSessionStore, task_store: TaskStore,
    test_settings: Settings, training_window: dict[str, Any],
) -> None:
    who = tenant()
    since = await training_data(publisher, store, session_store, who, 24)
    training_window.update(since=since, until=datetime.now(UTC) + timedelta(seconds=1), tenant=who)
    run_id = f"run-{uuid.uuid4().hex}"
    # Training reads the requesting tenant's sessions only (its own model lineage).
    # No recipe or epochs: the trainer's default recipe (linear-map) for its default epochs.
    request = {"run_id": run_id, "tenant": who, "min_sessions": 10, "gate_margin": 0.05,
               "since": training_window["since"].isoformat(), "until": training_window["until"].isoformat()}
    started = time.monotonic()
    await publisher.publish("training-requested", request)
    task = await finished(task_store, run_id)
    elapsed = time.monotonic() - started
    assert task["status"] == "succeeded", task
    details = task["details"]
    metrics = details["metrics"]
    assert metrics["candidate"]["ndcg_at_10"] > metrics["base"]["ndcg_at_10"] + 0.05
    assert details["dataset"]["sessions_with_clicks"] == 24 and details["dataset"]["eval_sessions"] > 0
    # The default recipe, the linear map, read every item of the tenant as its corpus.
    epochs = test_settings.training_map_epochs
    assert details["recipe"] == "linear-map" and details["epochs"] == epochs, details
    assert details["dataset"]["corpus_items"] == len(ITEMS) and details["training"]["steps"] > 0, details
    # Negatives mined from the tenant's index by the active (base) model, beside the shown ones.
    assert details["dataset"]["mined_queries"] > 0 and details["dataset"]["mined_negatives"] > 0, details
    # BM25 ranks nothing for a made-up word: no fusion weight is chosen (search keeps 0.5).
    assert details["dataset"]["keyword_eval_queries"] == 0 and "fusion_weight" not in metrics["candidate"]
    assert task["stage"] == "published" and task["progress"] == 1.0
    assert task["links"]["mlflow_run"].startswith(test_settings.mlflow_uri)
    registry_version = details["registry_version"]
    assert details["model_version"] == str(registry_version + 1)

    client = MlflowClient(tracking_uri=test_settings.mlflow_uri)
    version = client.get_model_version(REGISTERED_MODEL_NAME, str(registry_version))
    assert version.run_id is not None
    run = client.get_run(version.run_id)
    assert run.data.metrics["candidate_ndcg_at_10"] == pytest.approx(metrics["candidate"]["ndcg_at_10"])
    assert "base_mrr_at_10" in run.data.metrics and "dataset_triples" in run.data.metrics
    assert run.data.metrics["dataset_mined_negatives"] == details["dataset"]["mined_negatives"]
    assert run.data.params["recipe"] == "linear-map" and run.data.params["epochs"] == str(epochs)
    assert run.data.tags["gate"] == "passed"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert "model/modules.json" in artifacts and "model/model.safetensors" in artifacts
    assert "model/3_Dense" in artifacts  # the map, after Transformer, Pooling and Normalize

    records = await read_from(test_settings.bootstrap_servers, "model-published")
    published = [json.loads(r.value) for r in records if r.value and json.loads(r.value)["run_id"] == run_id]
    assert len(published) == 1
    event = published[0]
    assert event["model_version"] == str(registry_version + 1)
    assert event["registry_version"] == registry_version
    assert event["artifact_uri"] == version.source and event["base_version"] == "1"
    assert event.get("fusion_weight") is None  # none chosen: left out
    print(f"training run took {elapsed:.1f}s end to end; {details['training']}")
    training_window["run_id"] = run_id

    # The same request delivered again: nothing trains, registers or publishes twice.
    versions = len(registered(test_settings))
    await publisher.publish("training-requested", request)
    await caught_up(test_settings, "trainer", "training-requested", 120)
    again = await task_store.get(run_id)
    assert again is not None and again["updated_at"] == task["updated_at"]
    assert len(registered(test_settings)) == versions
    records = await read_from(test_settings.bootstrap_servers, "model-published")
    assert sum(1 for r in records if r.value and json.loads(r.value)["run_id"] == run_id) == 1


async def test_a_candidate_that_does_not_beat_the_margin_is_rejected(
    trainer_service: Component, publisher: Publisher, task_store: TaskStore, test_settings: Settings,
    training_window: dict[str, Any],
) -> None:
    if not training_window:
        pytest.skip("needs the sessions of the training test")
    versions = len(registered(test_settings))
    run_id = f"run-{uuid.uuid4().hex}"
    await publisher.publish("training-requested", {
        "run_id": run_id, "tenant": training_window["tenant"], "min_sessions": 10, "gate_margin": 1.0,
        "since": training_window["since"].isoformat(), "until": training_window["until"].isoformat()})
    task = await finished(task_store, run_id)
    assert task["status"] == "rejected" and task["stage"] == "rejected", task
    scores = task["details"]["metrics"]
    assert 0.0 <= scores["base"]["ndcg_at_10"] <= 1.0 and 0.0 <= scores["candidate"]["ndcg_at_10"] <= 1.0
    assert "does not beat" in task["error"]
    assert len(registered(test_settings)) == versions
    records = await read_from(test_settings.bootstrap_servers, "model-published")
    assert not any(r.value and json.loads(r.value)["run_id"] == run_id for r in records)


async def test_too_few_sessions_is_rejected_with_the_reason(
    trainer_service: Component, publisher: Publisher, task_store: TaskStore,
) -> None:
    run_id = f"run-{uuid.uuid4().hex}"
    future = datetime.now(UTC) + timedelta(days=3650)
    await publisher.publish("training-requested", {"run_id": run_id, "min_sessions": 5,
                                                   "since": future.isoformat()})
    task = await finished(task_store, run_id, 120)
    assert task["status"] == "rejected" and "too few sessions" in task["error"]


def flywheel(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True,
                          env={**os.environ, **settings.to_env()}, timeout=300, check=False)


async def test_cli_train_tasks_and_models(
    trainer_service: Component, test_settings: Settings, training_window: dict[str, Any],
) -> None:
    if "run_id" not in training_window:
        pytest.skip("needs the run of the training test")
    run_id = training_window["run_id"]
    shown = await asyncio.to_thread(flywheel, test_settings, "tasks", "show", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == "succeeded"
    listed = await asyncio.to_thread(flywheel, test_settings, "tasks", "--type", "training", "--json")
    assert run_id in {t["id"] for t in json.loads(listed.stdout)}
    models = await asyncio.to_thread(flywheel, test_settings, "models", "registry", "--json")
    assert models.returncode == 0, models.stderr
    versions = {v["version"]: v for v in json.loads(models.stdout)["versions"]}
    assert versions["1"]["index_status"] is not None
    mine = [v for v in versions.values() if v["training_run"] == run_id]
    assert len(mine) == 1 and mine[0]["metrics"]["candidate_ndcg_at_10"] > 0
    # Too few sessions: rejected quickly, without training; --wait reports it and exits 1.
    trained = await asyncio.to_thread(
        flywheel, test_settings, "train", "--min-sessions", "100000", "--wait", "--json", "--timeout", "120")
    assert trained.returncode == 1, trained.stderr
    task = json.loads(trained.stdout)
    assert task["status"] == "rejected" and "too few sessions" in task["error"]


async def test_training_on_uploaded_judgments_judged_on_a_held_out_set(
    indexer_service: Component, trainer_service: Component, publisher: Publisher, store: PgVectorStore,
    task_store: TaskStore, test_settings: Settings,
) -> None:
    who = tenant()
    await indexed_items(publisher, store, who)
    words = sorted(CODEWORDS)
    train = [{"query": w, "item_id": CODEWORDS[w], "grade": 2} for w in words[:4]]
    train += [{"query": words[0], "item_id": "rocket", "grade": 0}]  # an explicit negative
    # Held-out queries that name their item's subject, as a user might: BM25 ranks them.
    held = [{"query": f"{w} {ITEMS[CODEWORDS[w]][0].lower()}", "item_id": CODEWORDS[w]} for w in words[4:]]
    uploads = await DatasetStore.connect(test_settings.mongo_uri, test_settings.mongo_db)
    try:
        for name, rows in (("judged-train", train), ("judged-eval", held)):
            await uploads.create(who, name, "jsonl", parse_jsonl("\n".join(json.dumps(r) for r in rows)))
    finally:
        await uploads.close()
    run_id = f"run-{uuid.uuid4().hex}"
    await publisher.publish("training-requested", {
        "run_id": run_id, "tenant": who, "use_sessions": False, "datasets": ["judged-train"],
        "eval_dataset": "judged-eval", "min_sessions": 1000, "epochs": 1, "gate_margin": 0.0})
    task = await finished(task_store, run_id)
    stats = task["details"]["dataset"]
    # No session read (min_sessions does not apply to judgments); the uploaded pairs, the graded-0
    # negative and the held-out queries made the run, and the gate judged it on those queries.
    assert stats["sessions"] == 0 and stats["judged_pairs"] == 4 and stats["judged_negatives"] == 1, stats
    assert stats["judged_eval_queries"] == 4 and stats["eval_sessions"] == 0
    assert task["status"] in ("succeeded", "rejected"), task
    scores = task["details"]["metrics"]
    assert scores["base"]["queries"] == 4.0
    # Each held-out query carries its BM25 ranking: the hybrid score of both models on them, and
    # with fewer than 20 such queries the default weight, not one chosen on four queries.
    assert stats["keyword_eval_queries"] == 4, stats
    for model in ("base", "candidate"):
        assert scores[model]["fusion_queries"] == 4.0 and scores[model]["fusion_weight"] == 0.5
        assert scores[model]["hybrid_ndcg_at_10"] > 0.5, scores  # BM25 finds each by its subject
        # The score at every weight is kept with the task (and in MLflow), the chosen one among them.
        curve = {w: scores[model][weight_metric(w)] for w in WEIGHT_GRID}
        assert curve[0.5] == scores[model]["hybrid_ndcg_at_10"] and curve[0.0] > 0.5, curve
    if task["status"] == "succeeded":
        assert task["details"]["published_event"]["fusion_weight"] == 0.5

    # A dataset the tenant does not have: rejected with the reason, nothing trained.
    missing = f"run-{uuid.uuid4().hex}"
    await publisher.publish("training-requested", {"run_id": missing, "tenant": who,
                                                   "datasets": ["never-uploaded"]})
    task = await finished(task_store, missing, 120)
    assert task["status"] == "rejected" and "never-uploaded" in task["error"]
