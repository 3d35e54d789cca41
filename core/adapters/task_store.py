"""Long-running tasks (training, deploy, reindex) in MongoDB: status, stage, progress.

A task's id is the idempotency key of the request that started it, so creating it again
(a redelivered request) finds the existing task instead of starting another.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument

TaskType = Literal["training", "deploy", "reindex"]
TaskStatus = Literal["pending", "running", "succeeded", "failed", "rejected"]
FINAL_STATUSES = ("succeeded", "failed", "rejected")


def _now() -> datetime:
    return datetime.now(UTC)


class TaskStore:
    def __init__(self, client: AsyncMongoClient[dict[str, Any]], database: str) -> None:
        self.client = client
        self.tasks = client[database]["tasks"]

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
        """Set fields (status, stage, progress, error, links.x, details.x); a final task stays final
        unless `status` is given explicitly."""
        fields["updated_at"] = _now()
        task = await self.tasks.find_one_and_update(
            {"_id": task_id}, {"$set": fields}, return_document=ReturnDocument.AFTER
        )
        return _public(task) if task else None

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


def _public(task: dict[str, Any]) -> dict[str, Any]:
    task = dict(task)
    task["id"] = task.pop("_id")
    return task
