"""Long-running tasks (training, deploy, reindex) in MongoDB: status, stage, progress.

A task's id is the idempotency key of the request that started it, so creating it again
(a redelivered request) finds the existing task instead of starting another.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument
from pymongo.errors import DuplicateKeyError

from core.task_control import FINAL_STATUSES, RETRYABLE, TaskConflict, cancel_refusal, retry_refusal

TaskType = Literal["training", "deploy", "reindex"]
TaskStatus = Literal["pending", "running", "succeeded", "failed", "rejected", "cancelled"]


def _now() -> datetime:
    return datetime.now(UTC)


class TaskStore:
    def __init__(self, client: AsyncMongoClient[dict[str, Any]], database: str) -> None:
        self.client = client
        self.tasks = client[database]["tasks"]
        # One document per (type, tenant) naming the task that holds the tenant's turn.
        self.turns = client[database]["task_turns"]

    @classmethod
    async def connect(cls, uri: str, database: str) -> TaskStore:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
        store = cls(client, database)
        await store.tasks.create_index(
            [("tenant", ASCENDING), ("type", ASCENDING), ("created_at", DESCENDING)]
        )
        return store

    async def close(self) -> None:
        await self.client.close()

    async def create(
        self, task_id: str, type: TaskType, tenant: str, details: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], bool]:
        """The task with this id, created as pending if new; the flag says whether it was."""
        now = _now()
        before = await self.tasks.find_one_and_update(
            {"_id": task_id},
            {"$setOnInsert": {
                "type": type, "tenant": tenant, "status": "pending", "stage": "queued",
                "progress": 0.0, "created_at": now, "updated_at": now, "error": None,
                "links": {}, "details": details or {},
            }},
            upsert=True,
            return_document=ReturnDocument.BEFORE,
        )
        task = await self.tasks.find_one({"_id": task_id})
        assert task is not None
        return _public(task), before is None

    async def update(self, task_id: str, **fields: Any) -> dict[str, Any] | None:
        """Set fields (status, stage, progress, error, links.x, details.x) of a task that is not
        final. A final task does not change: `succeeded`, `rejected` and `cancelled` never again;
        `failed` only when `status` is given explicitly (a redelivered request retrying it). A
        cancelled task's worker sees the cancellation in what this returns (core.task_control).
        Returns the
        task as it is afterwards (unchanged when the update was refused); None if there is none."""
        fields["updated_at"] = _now()
        reopenable = ["failed"] if "status" in fields else []
        frozen = [s for s in FINAL_STATUSES if s not in reopenable]
        task = await self.tasks.find_one_and_update(
            {"_id": task_id, "status": {"$nin": frozen}}, {"$set": fields},
            return_document=ReturnDocument.AFTER,
        )
        if task is None:
            task = await self.tasks.find_one({"_id": task_id})
        return _public(task) if task else None

    async def request_cancel(self, task_id: str, tenant: str | None = None) -> dict[str, Any] | None:
        """Cancel a pending task (final at once) or ask a running one's worker to stop
        (`cancel_requested_at`); a task already asked stays as it is. None if there is no such
        task (of `tenant`, when given); TaskConflict when it is final."""
        owned: dict[str, Any] = {"_id": task_id} if tenant is None else {"_id": task_id, "tenant": tenant}
        now = _now()
        for _ in range(5):
            task = await self.tasks.find_one_and_update(
                {**owned, "status": "pending"},
                {"$set": {"status": "cancelled", "stage": "cancelled", "cancel_requested_at": now,
                          "cancelled_at": now, "updated_at": now, "error": "cancelled before it ran"}},
                return_document=ReturnDocument.AFTER)
            if task is None:
                task = await self.tasks.find_one_and_update(
                    {**owned, "status": "running"},
                    {"$set": {"cancel_requested_at": now, "updated_at": now}},
                    return_document=ReturnDocument.AFTER)
            if task is not None:
                return _public(task)
            current = await self.tasks.find_one(owned)
            if current is None:
                return None
            refusal = cancel_refusal(_public(current))
            if refusal is not None:
                raise TaskConflict(refusal)
        raise RuntimeError(f"could not cancel task {task_id!r}: too much contention")

    async def reopen(self, task_id: str, **fields: Any) -> dict[str, Any]:
        """A failed or cancelled task made pending again for a retry of the same task id
        (deploy, reindex), its cancellation and error cleared, `details.retries` counted;
        TaskConflict when it is in another state (a concurrent retry got there first)."""
        now = _now()
        task = await self.tasks.find_one_and_update(
            {"_id": task_id, "status": {"$in": list(RETRYABLE)}},
            {"$set": {"status": "pending", "stage": "queued", "progress": 0.0, "error": None,
                      "updated_at": now, **fields},
             "$unset": {"cancel_requested_at": "", "cancelled_at": ""},
             "$inc": {"details.retries": 1}},
            return_document=ReturnDocument.AFTER)
        if task is None:
            current = await self.tasks.find_one({"_id": task_id})
            raise TaskConflict((retry_refusal(_public(current)) if current else f"no task {task_id!r}")
                               or f"task {task_id!r} changed meanwhile; try again")
        return _public(task)

    async def link(self, task_id: str, name: str, value: str) -> None:
        """Record `links.<name>` on a task whatever its state (a final task's retry)."""
        await self.tasks.update_one({"_id": task_id}, {"$set": {f"links.{name}": value}})

    async def take_turn(self, type: TaskType, tenant: str, task_id: str) -> dict[str, Any] | None:
        """Make `task_id` the tenant's one unfinished task of `type`: None when it now is (or
        already was); else the unfinished task that holds the turn. Atomic across gateway
        processes: the turn document changes hands only from a task that is final or gone."""
        turn_id = f"{type}/{tenant}"
        for _ in range(5):
            try:
                await self.turns.insert_one({"_id": turn_id, "task_id": task_id})
                return None
            except DuplicateKeyError:
                pass
            turn = await self.turns.find_one({"_id": turn_id})
            if turn is None:
                continue
            if turn["task_id"] == task_id:
                return None
            holder = await self.tasks.find_one({"_id": turn["task_id"]})
            if holder is not None and holder.get("status") not in FINAL_STATUSES:
                return _public(holder)
            moved = await self.turns.update_one({"_id": turn_id, "task_id": turn["task_id"]},
                                                {"$set": {"task_id": task_id}})
            if moved.matched_count == 1:
                return None
        raise RuntimeError(f"could not take the {type} turn of tenant {tenant!r}: too much contention")

    async def get(self, task_id: str, tenant: str | None = None) -> dict[str, Any] | None:
        query: dict[str, Any] = {"_id": task_id}
        if tenant is not None:
            query["tenant"] = tenant
        task = await self.tasks.find_one(query)
        return _public(task) if task else None

    async def list(
        self, tenant: str | None = None, type: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        query = {k: v for k, v in {"tenant": tenant, "type": type, "status": status}.items() if v}
        cursor = self.tasks.find(query).sort("created_at", DESCENDING).limit(limit)
        return [_public(task) async for task in cursor]


    async def evaluation_metrics(self) -> dict[str, dict[str, float]]:
        """Held-out scores per model version, from the training runs that passed the gate:
        a version's are its candidate scores in the run that produced it; a version no run
        produced (the base model) gets its scores in the first run that fine-tuned it."""
        produced: dict[str, dict[str, float]] = {}
        as_base: dict[str, dict[str, float]] = {}
        cursor = self.tasks.find(
            {"type": "training", "status": "succeeded", "details.model_version": {"$exists": True}},
            projection={"details.model_version": 1, "details.base_version": 1, "details.metrics": 1},
        ).sort("created_at", ASCENDING)
        async for task in cursor:
            details = task.get("details") or {}
            scores = details.get("metrics") or {}
            produced[str(details["model_version"])] = dict(scores.get("candidate") or {})
            if details.get("base_version"):
                as_base.setdefault(str(details["base_version"]), dict(scores.get("base") or {}))
        return {**as_base, **produced}

    async def lineage(self) -> dict[str, dict[str, Any]]:
        """Per model version a training run produced, where it comes from: the run (`training_run`),
        the tenant whose data trained it, its base version, the dataset's statistics, the gate's
        decision (margin and reason) and the MLflow run's link."""
        found: dict[str, dict[str, Any]] = {}
        cursor = self.tasks.find(
            {"type": "training", "status": "succeeded", "details.model_version": {"$exists": True}},
            projection={"tenant": 1, "details.model_version": 1, "details.base_version": 1,
                        "details.dataset": 1, "details.reason": 1, "details.metrics.gate_margin": 1,
                        "links.mlflow_run": 1, "updated_at": 1},
        ).sort("created_at", ASCENDING)
        async for task in cursor:
            details = task.get("details") or {}
            found[str(details["model_version"])] = {
                "training_run": task["_id"], "tenant": task.get("tenant"),
                "base_version": details.get("base_version"), "dataset": details.get("dataset") or {},
                "gate": {"decision": "passed", "reason": details.get("reason"),
                         "margin": (details.get("metrics") or {}).get("gate_margin")},
                "mlflow_run": (task.get("links") or {}).get("mlflow_run"),
                "trained_at": task.get("updated_at"),
            }
        return found


def _public(task: dict[str, Any]) -> dict[str, Any]:
    task = dict(task)
    task["id"] = task.pop("_id")
    return task
