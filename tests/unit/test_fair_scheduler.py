"""Work requests in fair turns between tenants (consumers.fair_scheduler, core.scheduling),
over an in-memory work queue with the same rules as the MongoDB one (core.adapters.work_queue)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from consumers.error_policy import ErrorPolicy
from consumers.fair_scheduler import FairScheduler
from core.adapters.work_queue import Claim
from core.ports import DependencyUnavailable
from core.scheduling import Queued, turn_order
from schemas.training import TrainingRequested

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_the_tenant_served_longest_ago_goes_first_each_tenant_in_its_own_order() -> None:
    queued = [Queued("a1", "a", at(1)), Queued("a2", "a", at(2)), Queued("a3", "a", at(3)),
              Queued("b1", "b", at(4)), Queued("c1", "c", at(0))]
    # Never served: by their oldest request.
    assert [q.id for q in turn_order(queued, {})] == ["c1", "a1", "b1"]
    # a was just served: b and c come before its next one, however early a queued.
    assert [q.id for q in turn_order(queued, {"a": at(10), "c": at(5)})] == ["b1", "c1", "a1"]
    assert turn_order([], {}) == []


class FakeQueue:
    """The work queue's rules in memory: a lease per request, `seq` bumped by each request,
    turns by when each tenant's work last started."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.turns: dict[str, datetime] = {}
        self.clock = 0
        self.started: list[str] = []

    def tick(self) -> datetime:
        self.clock += 1
        return at(self.clock)

    async def enqueue(self, kind: str, task_id: str, tenant: str, event: dict[str, Any]) -> None:
        doc = self.docs.setdefault(task_id, {"seq": 0, "queued": False, "leased": None, "attempts": 0})
        if not doc["queued"]:
            doc.update(accepted_at=self.tick(), attempts=0)
        doc.update(tenant=tenant, event=event, queued=True, seq=doc["seq"] + 1)

    async def claim_next(self, kind: str, owner: str, lease_s: float) -> Claim | None:
        due = [Queued(k, d["tenant"], d["accepted_at"]) for k, d in self.docs.items()
               if d["queued"] and d["leased"] is None]
        order = turn_order(due, self.turns)
        if not order:
            return None
        key = order[0].id
        doc = self.docs[key]
        doc["leased"] = owner
        self.turns[doc["tenant"]] = self.tick()
        self.started.append(key)
        return Claim(key, key, doc["tenant"], doc["event"], doc["seq"], doc["attempts"], owner,
                     at(self.clock))

    async def renew(self, claim: Claim, lease_s: float) -> bool:
        return self.docs[claim.id]["leased"] == claim.owner

    async def done(self, claim: Claim) -> None:
        doc = self.docs[claim.id]
        if doc["seq"] == claim.seq:
            doc["queued"] = False
        doc.update(leased=None, attempts=0)

    async def retry_later(self, claim: Claim, delay_s: float, attempts: int) -> None:
        self.docs[claim.id].update(leased=None, attempts=attempts)


def request(tenant: str, n: int) -> TrainingRequested:
    return TrainingRequested(run_id=f"{tenant}{n}", tenant=tenant, source="test")


def scheduler(queue: FakeQueue, run: Any, **options: Any) -> FairScheduler[TrainingRequested]:
    failed: list[tuple[str, str]] = options.pop("failed", [])

    async def on_failed(event: TrainingRequested, reason: str) -> None:
        failed.append((event.run_id, reason))

    return FairScheduler("training", TrainingRequested, queue, run,
                         ErrorPolicy(max_attempts=3, backoff_s=0.0), task_id_of=lambda e: e.run_id,
                         on_failed=on_failed, **options)


async def drain(fair: FairScheduler[TrainingRequested]) -> None:
    while await fair.run_next():
        pass


async def test_a_tenant_with_one_request_runs_before_another_tenants_queue_drains() -> None:
    queue, ran = FakeQueue(), []

    async def run(event: TrainingRequested) -> None:
        ran.append(event.run_id)
        if event.run_id == "a1":  # b asks while a's first run is in hand
            await fair.accept(request("b", 1))

    fair = scheduler(queue, run)
    for n in (1, 2, 3):
        await fair.accept(request("a", n))
    await drain(fair)
    assert ran == ["a1", "b1", "a2", "a3"]
    # Three tenants: turns go round (c never served, then b, served before a last was), each
    # tenant's own requests in order.
    ran.clear()
    for tenant, n in (("a", 4), ("a", 5), ("b", 2), ("b", 3), ("c", 1)):
        await fair.accept(request(tenant, n))
    await drain(fair)
    assert ran == ["c1", "b2", "a4", "b3", "a5"]


async def test_a_request_is_dequeued_only_after_its_run_and_runs_again_if_asked_meanwhile() -> None:
    queue, ran = FakeQueue(), []

    async def run(event: TrainingRequested) -> None:
        ran.append(event.run_id)
        assert queue.docs[event.run_id]["queued"]  # still queued while it runs
        if len(ran) == 1:
            await fair.accept(event)  # redelivered meanwhile

    fair = scheduler(queue, run)
    await fair.accept(request("a", 1))
    await fair.accept(request("a", 1))  # a redelivery before it ran: one run
    await drain(fair)
    assert ran == ["a1", "a1"] and not queue.docs["a1"]["queued"]


async def test_transient_errors_are_retried_then_the_task_fails_with_the_reason() -> None:
    queue, ran = FakeQueue(), []
    failed: list[tuple[str, str]] = []

    async def run(event: TrainingRequested) -> None:
        ran.append(event.run_id)
        if event.run_id == "a1":
            raise DependencyUnavailable("mlflow is down")
        if event.run_id == "b1":
            raise ValueError("a bug")

    fair = scheduler(queue, run, failed=failed)
    await fair.accept(request("a", 1))
    await fair.accept(request("b", 1))
    await drain(fair)
    assert ran.count("a1") == 3 and ran.count("b1") == 1  # a permanent error is not retried
    assert failed == [("b1", "ValueError: a bug"),
                      ("a1", "gave up after 3 attempts: DependencyUnavailable: mlflow is down")]
    assert not any(doc["queued"] for doc in queue.docs.values())


async def test_a_run_without_progress_is_stopped_and_recorded() -> None:
    queue, stalled = FakeQueue(), []

    async def run(event: TrainingRequested) -> None:
        await asyncio.sleep(30)

    async def on_stall(event: TrainingRequested, reason: str) -> None:
        stalled.append((event.run_id, reason))

    fair = scheduler(queue, run, stall_timeout_s=0.2, on_stall=on_stall)
    await fair.accept(request("a", 1))
    assert await fair.run_next()
    assert stalled == [("a1", "no progress for 0.2 s (stall timeout)")] and not queue.docs["a1"]["queued"]


@pytest.mark.parametrize("renewals", [3])
async def test_the_lease_is_renewed_while_a_run_lasts(renewals: int) -> None:
    queue = FakeQueue()
    renewed: list[str] = []
    original = queue.renew

    async def renew(claim: Claim, lease_s: float) -> bool:
        renewed.append(claim.id)
        return await original(claim, lease_s)

    queue.renew = renew  # type: ignore[method-assign]

    async def run(event: TrainingRequested) -> None:
        await asyncio.sleep(0.35)

    fair = scheduler(queue, run, lease_s=0.3)
    await fair.accept(request("a", 1))
    await fair.run_next()
    assert len(renewed) >= renewals
