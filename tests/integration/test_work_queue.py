"""The work queue's rules on the real MongoDB-compatible store (core.adapters.work_queue):
turns between tenants, one lease at a time, a lapsed lease taken over, a request asked again
while it runs kept queued, a retry due only after its pause."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from core.adapters.task_store import TaskStore
from core.adapters.work_queue import MongoWorkQueue
from core.config import Settings

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def queue(task_store: TaskStore, test_settings: Settings) -> AsyncIterator[MongoWorkQueue]:
    yield MongoWorkQueue(task_store.client, test_settings.mongo_db)


async def test_turns_leases_and_requests_asked_again(queue: MongoWorkQueue) -> None:
    kind = f"test-{uuid.uuid4().hex[:8]}"  # a kind of its own: no other test's requests
    for task, tenant in (("a1", "a"), ("a2", "a"), ("b1", "b")):
        await queue.enqueue(kind, task, tenant, {"n": task})

    first = await queue.claim_next(kind, "w1", lease_s=60)
    assert first is not None and first.task_id == "a1" and first.event == {"n": "a1"}
    # a was served last: b's request comes before a's next one.
    second = await queue.claim_next(kind, "w2", lease_s=0.5)
    assert second is not None and second.task_id == "b1"
    third = await queue.claim_next(kind, "w3", lease_s=60)
    assert third is not None and third.task_id == "a2"
    assert await queue.claim_next(kind, "w3", lease_s=60) is None  # all leased

    # w2 died: its lease lapses and another worker takes the request over.
    await asyncio.sleep(0.6)
    again = await queue.claim_next(kind, "w4", lease_s=60)
    assert again is not None and again.task_id == "b1"
    assert not await queue.renew(second, 60)  # w2's lease is gone

    # a1 is asked for again while it runs: done leaves it queued, for one more run.
    await queue.enqueue(kind, "a1", "a", {"n": "a1"})
    await queue.done(first)
    doc = await queue.get(kind, "a1")
    assert doc is not None and doc["queued"] and doc["lease_owner"] is None
    rerun = await queue.claim_next(kind, "w1", lease_s=60)
    assert rerun is not None and rerun.task_id == "a1" and rerun.seq == first.seq + 1
    await queue.done(rerun)
    doc = await queue.get(kind, "a1")
    assert doc is not None and not doc["queued"]

    # A retry is due only after its pause, and counts its attempts.
    await queue.retry_later(third, 0.5, 1)
    assert await queue.claim_next(kind, "w1", lease_s=60) is None
    await asyncio.sleep(0.6)
    retried = await queue.claim_next(kind, "w1", lease_s=60)
    assert retried is not None and retried.task_id == "a2" and retried.attempts == 1
    await queue.done(retried)
    await queue.done(again)
    assert await queue.claim_next(kind, "w1", lease_s=60) is None
