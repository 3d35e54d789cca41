"""The trainer through an MLflow outage: the request waits (its task says why) and finishes
by itself once MLflow is back; nothing is registered twice."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from core.adapters.pgvector import PgVectorStore
from core.adapters.session_store import MongoSessionStore
from core.adapters.task_store import TaskStore
from core.config import Settings
from infra.process import Component
from producers.publisher import Publisher
from tests.integration.test_training import finished, registered, training_data

pytestmark = pytest.mark.reliability


async def test_training_waits_out_an_mlflow_outage_and_finishes_when_it_returns(
    mlflow_server: Component, trainer_service: Component, sessions_service: Component,
    indexer_service: Component, publisher: Publisher, store: PgVectorStore,
    session_store: MongoSessionStore, task_store: TaskStore, test_settings: Settings,
) -> None:
    who = f"mlflow-down-{uuid.uuid4().hex[:8]}"
    since = await training_data(publisher, store, session_store, who, 24)
    before = len(registered(test_settings))
    run_id = f"run-{uuid.uuid4().hex}"
    await asyncio.to_thread(mlflow_server.stop)
    try:
        await publisher.publish("training-requested", {
            "run_id": run_id, "tenant": who, "min_sessions": 10, "gate_margin": 0.0,
            "since": since.isoformat(), "until": (datetime.now(UTC) + timedelta(seconds=1)).isoformat()})
        deadline = time.monotonic() + 120
        waiting: dict | None = None
        while waiting is None:  # (a connection an earlier outage test broke may be retried first)
            task = await task_store.get(run_id)
            if task and task["stage"] == "waiting" and "MLflow is unavailable" in (task["error"] or ""):
                waiting = task
            assert time.monotonic() < deadline, f"the task never showed the outage: {task}"
            await asyncio.sleep(0.5)
        assert waiting["status"] == "pending"
        await asyncio.sleep(3)  # retries while MLflow stays down (each one runs, then waits again)
        task = await task_store.get(run_id)
        assert task is not None and task["status"] in ("pending", "running"), task
    finally:
        await asyncio.to_thread(mlflow_server.start)

    done = await finished(task_store, run_id)
    assert done["status"] == "succeeded", done
    assert done["error"] is None and done["links"]["mlflow_run"]
    assert len(registered(test_settings)) == before + 1  # registered once, after the outage
