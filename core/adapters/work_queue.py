"""Accepted work requests (training runs, reindexes) waiting for a worker, in MongoDB.

Collection `work_queue`, one document per task (`<kind>/<task id>`): the request as it arrived
(`event`), whether it still wants a run (`queued`), how often it was requested (`seq`), when it
was accepted, and a lease: the worker that runs it and until when (renewed while it runs; a
worker that died loses it when it expires, and another takes the request over). Collection
`work_turns`, one document per kind and tenant: when that tenant's work last started, which
decides whose turn is next (core.scheduling.turn_order). The task itself (`tasks`) gets
`started_at` each time a worker starts it (a task the run itself created, when the run ends).

A request accepted again while it runs (a redelivery, a retry) bumps `seq`: the run that
finishes then leaves it queued, and it runs once more (the handlers are idempotent per task).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection

from core.scheduling import NEVER, Queued, turn_order

MAX_CANDIDATES = 1000


@dataclass(frozen=True)
class Claim:
    """A request a worker holds the lease of."""

    id: str
    task_id: str
    tenant: str
    event: dict[str, Any]
    seq: int
    attempts: int
    owner: str
    started_at: datetime


def _now() -> datetime:
    return datetime.now(UTC)


class MongoWorkQueue:
    def __init__(self, client: AsyncMongoClient[dict[str, Any]], database: str) -> None:
        db = client[database]
        self.queue: AsyncCollection[dict[str, Any]] = db["work_queue"]
        self.turns: AsyncCollection[dict[str, Any]] = db["work_turns"]
        self.tasks: AsyncCollection[dict[str, Any]] = db["tasks"]
        self._indexed = False

    async def _ensure_index(self) -> None:
        if not self._indexed:
            await self.queue.create_index(
                [("kind", ASCENDING), ("queued", ASCENDING), ("accepted_at", ASCENDING)])
            self._indexed = True

    async def enqueue(self, kind: str, task_id: str, tenant: str, event: dict[str, Any]) -> None:
        """Queue a run of `task_id` (again, when it was done), keeping its place if queued."""
        await self._ensure_index()
        key, now = f"{kind}/{task_id}", _now()
        # A request that was done gets a new place in line; one still queued keeps its own.
        await self.queue.update_one({"_id": key, "queued": False}, {"$set": {
            "accepted_at": now, "attempts": 0, "not_before": NEVER}})
        await self.queue.update_one({"_id": key}, {
            "$set": {"kind": kind, "task_id": task_id, "tenant": tenant, "event": event, "queued": True},
            "$inc": {"seq": 1},
            "$setOnInsert": {"accepted_at": now, "attempts": 0, "not_before": NEVER, "lease_until": NEVER,
                             "lease_owner": None},
        }, upsert=True)

    async def claim_next(self, kind: str, owner: str, lease_s: float) -> Claim | None:
        """Lease the next request in turn (core.scheduling.turn_order), or None when no request
        is due. Atomic between workers: a request is leased to one at a time."""
        await self._ensure_index()
        now = _now()
        due = {"kind": kind, "queued": True, "lease_until": {"$lt": now}, "not_before": {"$lte": now}}
        cursor = self.queue.find(due, {"tenant": 1, "accepted_at": 1}).sort("accepted_at", ASCENDING)
        queued = [Queued(doc["_id"], doc["tenant"], doc["accepted_at"])
                  async for doc in cursor.limit(MAX_CANDIDATES)]
        if not queued:
            return None
        tenants = sorted({q.tenant for q in queued})
        last = {doc["tenant"]: doc["started_at"] async for doc in self.turns.find(
            {"_id": {"$in": [f"{kind}/{t}" for t in tenants]}})}
        for candidate in turn_order(queued, last):
            doc = await self.queue.find_one_and_update(
                {**due, "_id": candidate.id},
                {"$set": {"lease_owner": owner, "lease_until": now + timedelta(seconds=lease_s),
                          "started_at": now}},
                return_document=ReturnDocument.AFTER)
            if doc is None:  # another worker took it meanwhile
                continue
            await self.turns.update_one({"_id": f"{kind}/{doc['tenant']}"},
                                        {"$set": {"tenant": doc["tenant"], "started_at": now}}, upsert=True)
            await self.tasks.update_one({"_id": doc["task_id"]}, {"$set": {"started_at": now}})
            return Claim(doc["_id"], doc["task_id"], doc["tenant"], doc["event"], int(doc["seq"]),
                         int(doc.get("attempts") or 0), owner, now)
        return None

    async def renew(self, claim: Claim, lease_s: float) -> bool:
        """Extend the lease; False when the worker no longer holds it."""
        result = await self.queue.update_one(
            {"_id": claim.id, "lease_owner": claim.owner},
            {"$set": {"lease_until": _now() + timedelta(seconds=lease_s)}})
        return result.matched_count == 1

    async def _mark_started(self, claim: Claim) -> None:
        """A task the run itself created (none existed when it was claimed) gets its start too."""
        await self.tasks.update_one({"_id": claim.task_id, "started_at": {"$exists": False}},
                                    {"$set": {"started_at": claim.started_at}})

    async def done(self, claim: Claim) -> None:
        """The run ended: dequeue the request, unless it was requested again meanwhile."""
        await self._mark_started(claim)
        release = {"lease_until": NEVER, "lease_owner": None, "attempts": 0, "not_before": NEVER}
        finished = await self.queue.update_one(
            {"_id": claim.id, "lease_owner": claim.owner, "seq": claim.seq},
            {"$set": {**release, "queued": False}})
        if finished.matched_count == 0:
            await self.queue.update_one({"_id": claim.id, "lease_owner": claim.owner}, {"$set": release})

    async def retry_later(self, claim: Claim, delay_s: float, attempts: int) -> None:
        """The run failed for now: keep it queued, due again after `delay_s`."""
        await self._mark_started(claim)
        await self.queue.update_one({"_id": claim.id, "lease_owner": claim.owner}, {"$set": {
            "lease_until": NEVER, "lease_owner": None, "attempts": attempts,
            "not_before": _now() + timedelta(seconds=delay_s)}})

    async def get(self, kind: str, task_id: str) -> dict[str, Any] | None:
        return await self.queue.find_one({"_id": f"{kind}/{task_id}"})
