"""Fair turns between tenants, on the real reindexer, Kafka and MongoDB (consumers.fair_scheduler).

Tenant A queues three reindexes, then tenant B one. A's first one asks for a version Triton
does not serve, so it holds the worker (waiting `reindex_ready_timeout_s` for the version)
while the other requests arrive; the rest fail at once (versions that are not numbers), which
keeps the test cheap. The order is read from the tasks' start times in MongoDB: B's reindex
started before A's second and third, so B never waited for A's queue.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from consumers.reindexer.handlers import task_id
from core.adapters.task_store import TaskStore
from core.adapters.work_queue import MongoWorkQueue
from core.config import Settings
from core.task_control import FINAL_STATUSES
from infra.process import Component
from producers.publisher import Publisher
from tests.conftest import _run
from tests.helpers import wait_for
from tests.integration.test_rollout import _service, skip_history

pytestmark = [pytest.mark.integration, pytest.mark.rollout]


@pytest.fixture(scope="module")
def fair_reindexer(
    kafka: Component, postgres: Component, mongodb: Component, triton: Component, test_settings: Settings
) -> Iterator[Component]:
    skip_history(test_settings, "reindex-requested", "reindexer")
    settings = test_settings.model_copy(update={"reindex_ready_timeout_s": 15.0})
    yield from _run(_service(settings, "reindexer"))


@pytest_asyncio.fixture
async def work_queue(task_store: TaskStore, test_settings: Settings) -> AsyncIterator[MongoWorkQueue]:
    yield MongoWorkQueue(task_store.client, test_settings.mongo_db)


async def test_a_tenants_reindex_starts_before_another_tenants_queue_drains(
    fair_reindexer: Component, publisher: Publisher, task_store: TaskStore, work_queue: MongoWorkQueue,
) -> None:
    run = uuid.uuid4().hex[:6]
    a, b = f"fair-a-{run}", f"fair-b-{run}"
    unserved = str(800_000 + int(run, 16) % 100_000)  # numeric, never deployed
    a_versions = [unserved, f"none{run}x2", f"none{run}x3"]
    a_tasks = [task_id(v, a) for v in a_versions]
    b_task = task_id(f"none{run}y1", b)

    async def task(tid: str) -> dict[str, Any]:
        found = await task_store.get(tid)
        return found or {}

    await publisher.publish("reindex-requested", {"model_version": a_versions[0], "tenant": a})

    async def first_running() -> bool:
        return (await task(a_tasks[0])).get("status") == "running"
    await wait_for(first_running, 60)

    for version in a_versions[1:]:
        await publisher.publish("reindex-requested", {"model_version": version, "tenant": a})
    await publisher.publish("reindex-requested", {"model_version": f"none{run}y1", "tenant": b})

    async def all_accepted() -> bool:
        docs = [await work_queue.get("reindex", tid) for tid in [*a_tasks[1:], b_task]]
        return all(doc is not None and doc["queued"] for doc in docs)
    await wait_for(all_accepted, 60)
    # The premise: A's first reindex still holds the worker while the others wait in the queue.
    assert (await task(a_tasks[0]))["status"] == "running", await task(a_tasks[0])

    async def all_final() -> bool:
        statuses = [(await task(tid)).get("status") for tid in [*a_tasks, b_task]]
        return all(status in FINAL_STATUSES for status in statuses)
    await wait_for(all_final, 120)

    tasks = {tid: await task(tid) for tid in [*a_tasks, b_task]}
    started = {tid: t["started_at"] for tid, t in tasks.items()}
    order = sorted(started, key=lambda tid: started[tid])
    assert order == [a_tasks[0], b_task, a_tasks[1], a_tasks[2]], (order, started)
    assert "does not serve model version" in tasks[a_tasks[0]]["error"]
    assert all(tasks[tid]["status"] == "failed" for tid in tasks)
    # Every request ran and left the queue.
    for tid in tasks:
        doc = await work_queue.get("reindex", tid)
        assert doc is not None and not doc["queued"] and doc["lease_owner"] is None
