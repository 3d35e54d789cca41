"""Cancel and retry through the gateway against the real stack (Kafka, MongoDB, PostgreSQL,
Triton, MLflow, the indexer, sessions, trainer and reindexer services): a running training run
stops within optimizer steps and registers nothing, a pending one is skipped by the trainer when
it reaches it, and a retry runs the request again as a new run linked to the old one; a running
reindex stops between batches, drops what it had written and leaves the active version serving."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from mlflow.tracking import MlflowClient

from core.adapters.pgvector import PgVectorStore
from core.adapters.session_store import MongoSessionStore
from core.adapters.task_store import TaskStore
from core.api_keys import hash_key
from core.config import Settings
from core.task_control import FINAL_STATUSES
from infra.process import Component
from infra.services import gateway_service
from producers.publisher import Publisher
from tests.conftest import _run
from tests.helpers import wait_for
from tests.integration.test_rollout import chunked_items, placed_version, publish_docs, reindexer_service
from tests.integration.test_training import caught_up, registered, training_data

pytestmark = pytest.mark.integration
__all__ = ["reindexer_service"]  # a fixture (slow batches, so a backfill can be caught running)

TA, TB = f"ca-{uuid.uuid4().hex[:8]}", f"cb-{uuid.uuid4().hex[:8]}"
SECRET = {TA: f"key-a-{uuid.uuid4().hex}", TB: f"key-b-{uuid.uuid4().hex}"}


def auth(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRET[tenant]}"}


@pytest.fixture(scope="module")
def gateway(
    test_settings: Settings, kafka: Component, postgres: Component, mongodb: Component
) -> Iterator[str]:
    records = [{"key_id": f"admin-{t}", "key_sha256": hash_key(SECRET[t]), "tenant": t, "scopes": ["admin"]}
               for t in (TA, TB)]
    settings = test_settings.model_copy(update={"api_keys_json": json.dumps(records)})
    for _ in _run(gateway_service(settings)):
        yield settings.gateway_url


async def task_of(client: httpx.AsyncClient, tenant: str, task_id: str) -> dict[str, Any]:
    answer = await client.get(f"/v1/tasks/{task_id}", headers=auth(tenant))
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


async def until(client: httpx.AsyncClient, tenant: str, task_id: str, holds: Any, timeout_s: float
                ) -> dict[str, Any]:
    async def check() -> bool:
        return bool(holds(await task_of(client, tenant, task_id)))
    await wait_for(check, timeout_s, every_s=0.5, what=f"task {task_id}")
    return await task_of(client, tenant, task_id)


async def test_cancel_a_running_and_a_pending_training_run_then_retry(
    gateway: str, indexer_service: Component, sessions_service: Component, trainer_service: Component,
    publisher: Publisher, store: PgVectorStore, session_store: MongoSessionStore, task_store: TaskStore,
    test_settings: Settings,
) -> None:
    since = await training_data(publisher, store, session_store, TA, 24)
    await training_data(publisher, store, session_store, TB, 24)
    window = {"since": since.isoformat(), "until": (datetime.now(UTC) + timedelta(seconds=1)).isoformat()}
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as client:
        # A long run (the transformer fine-tuned for many epochs) for A, and B's run queued behind it.
        long = await client.post("/v1/training-runs", headers=auth(TA),
                                 json={"min_sessions": 10, "recipe": "fine-tune", "epochs": 100, **window})
        assert long.status_code == 202, long.text
        running_id = long.json()["task_id"]
        def training(task: dict[str, Any]) -> bool:
            return task["stage"] == "training" and (task["details"].get("steps") or {}).get("done", 0) >= 1
        await until(client, TA, running_id, training, 600)
        queued = await client.post("/v1/training-runs", headers=auth(TB),
                                   json={"min_sessions": 10, "epochs": 1, **window})
        pending_id = queued.json()["task_id"]
        cancelled = await client.post(f"/v1/tasks/{pending_id}/cancel", headers=auth(TB))
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text

        asked = await client.post(f"/v1/tasks/{running_id}/cancel", headers=auth(TA))
        assert asked.status_code == 200 and asked.json()["cancel_requested_at"], asked.text
        stopped = await until(client, TA, running_id, lambda t: t["status"] in FINAL_STATUSES, 300)
        assert stopped["status"] == "cancelled" and stopped["stage"] == "training", stopped
        steps = stopped["details"]["steps"]
        assert steps["done"] < steps["total"]  # stopped, not trained to the end
        assert "registry_version" not in stopped["details"]
        mlflow_run = stopped["links"]["mlflow_run"].rsplit("/", 1)[-1]
        assert MlflowClient(tracking_uri=test_settings.mlflow_uri).get_run(mlflow_run).info.status == "KILLED"
        assert not [v for v in registered(test_settings) if v.run_id == mlflow_run]

        # B's request reached the trainer after A's run stopped: skipped, never run.
        await caught_up(test_settings, "trainer", "training-requested", 120)
        skipped = await task_of(client, TB, pending_id)
        assert skipped["status"] == "cancelled" and skipped["stage"] == "cancelled"
        assert "dataset" not in skipped["details"] and "steps" not in skipped["details"]

        # Retried, B's request runs as a new run that names the old one.
        retried = await client.post(f"/v1/tasks/{pending_id}/retry", headers=auth(TB))
        assert retried.status_code == 202, retried.text
        new_id = retried.json()["task_id"]
        done = await until(client, TB, new_id, lambda t: t["status"] in FINAL_STATUSES, 600)
        assert done["status"] in ("succeeded", "rejected"), done
        assert done["details"]["retry_of"] == pending_id and "dataset" in done["details"]
        assert done["details"]["request"]["epochs"] == 1 and done["details"]["recipe"] == "linear-map"
        assert (await task_of(client, TB, pending_id))["links"]["retried_by"] == new_id


async def test_cancel_a_running_reindex_and_the_active_version_keeps_serving(
    gateway: str, indexer_service: Component, reindexer_service: Component, publisher: Publisher,
    store: PgVectorStore, test_settings: Settings,
) -> None:
    version = await placed_version(test_settings)  # served by Triton, without an index
    for round_ in range(25):
        await publish_docs(publisher, TA, suffix=f"-r{round_}")

    async def indexed() -> bool:
        return await store.count_items(TA) >= 100
    await wait_for(indexed, 300, what=f"{TA}'s items indexed")
    active = await store.active_version(TA)
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as client:
        accepted = await client.post("/v1/reindex", headers=auth(TA),
                                     json={"model_version": version, "activate": True})
        assert accepted.status_code == 202, accepted.text
        task_id = accepted.json()["task_id"]
        await until(client, TA, task_id, lambda t: (t["details"].get("consumed") or 0) > 0, 300)
        asked = await client.post(f"/v1/tasks/{task_id}/cancel", headers=auth(TA))
        assert asked.status_code == 200 and asked.json()["cancel_requested_at"], asked.text
        stopped = await until(client, TA, task_id, lambda t: t["status"] in FINAL_STATUSES, 120)
        assert stopped["status"] == "cancelled" and stopped["error"] == "cancelled", stopped

        # The half-built version failed and holds none of the tenant's rows; search still
        # answers from the version that was active.
        versions = {row["version"]: row for row in await store.list_versions(TA)}
        assert versions[version]["status"] == "failed" and "cancelled" in versions[version]["reason"]
        assert not [key for key in await chunked_items(store, version) if key[0] == TA]
        assert await store.active_version(TA) == active
        found = await client.post("/v1/search", headers=auth(TA), json={"query": "bread and yeast", "k": 3})
        assert found.status_code == 200 and found.json()["model_version"] == active
        assert found.json()["results"][0]["id"].startswith("bread")
