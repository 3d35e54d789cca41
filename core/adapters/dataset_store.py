"""Uploaded judgment datasets in MongoDB, per tenant (core.datasets parses them).

`datasets`: one document per dataset, `_id` "<tenant>/<name>": its format, statistics, the
first rejects, when it was made, and `status` (`uploading` while its judgments are written,
then `ready`). `dataset_judgments`: one document per judgment, keyed by the dataset's id.
A tenant's dataset names are its own: another tenant's dataset of the same name is another.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, AsyncMongoClient
from pymongo.errors import DuplicateKeyError

from core.datasets import DatasetFormat, ParsedDataset

BATCH = 1000
REJECTS_KEPT = 100


class DatasetExists(Exception):
    """The tenant has a dataset of that name."""


class DatasetStore:
    def __init__(self, client: AsyncMongoClient[dict[str, Any]], database: str) -> None:
        self.client = client
        self.datasets = client[database]["datasets"]
        self.judgments = client[database]["dataset_judgments"]

    @classmethod
    async def connect(cls, uri: str, database: str) -> DatasetStore:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
        store = cls(client, database)
        await store.datasets.create_index([("tenant", ASCENDING), ("name", ASCENDING)])
        await store.judgments.create_index([("dataset", ASCENDING), ("line", ASCENDING)])
        return store

    async def close(self) -> None:
        await self.client.close()

    async def create(self, tenant: str, name: str, format: DatasetFormat, parsed: ParsedDataset
                     ) -> dict[str, Any]:
        """Store a parsed dataset; DatasetExists if the tenant has one of that name."""
        key = f"{tenant}/{name}"
        try:
            await self.datasets.insert_one({
                "_id": key, "tenant": tenant, "name": name, "format": format, "status": "uploading",
                "created_at": datetime.now(UTC), "stats": parsed.stats,
                "rejects": [r.as_dict() for r in parsed.rejects[:REJECTS_KEPT]],
            })
        except DuplicateKeyError as error:
            raise DatasetExists(f"tenant {tenant!r} has a dataset {name!r}; delete it first or choose "
                                f"another name") from error
        rows = [{"dataset": key, "line": n, **j.model_dump(exclude_none=True)}
                for n, j in enumerate(parsed.judgments, start=1)]
        for start in range(0, len(rows), BATCH):
            await self.judgments.insert_many(rows[start:start + BATCH], ordered=False)
        await self.datasets.update_one({"_id": key}, {"$set": {"status": "ready"}})
        found = await self.get(tenant, name)
        assert found is not None
        return found

    async def get(self, tenant: str, name: str, sample: int = 0) -> dict[str, Any] | None:
        """A dataset (with its first `sample` judgments), or None."""
        doc = await self.datasets.find_one({"_id": f"{tenant}/{name}"})
        if doc is None:
            return None
        found = _public(doc)
        if sample:
            hidden = {"_id": 0, "dataset": 0, "line": 0}
            cursor = self.judgments.find({"dataset": doc["_id"]}, projection=hidden).sort("line", ASCENDING)
            found["sample"] = [row async for row in cursor.limit(sample)]
        return found

    async def delete(self, tenant: str, name: str) -> bool:
        """Remove a dataset and its judgments; False if there was none."""
        key = f"{tenant}/{name}"
        await self.judgments.delete_many({"dataset": key})
        removed = await self.datasets.delete_one({"_id": key})
        return removed.deleted_count == 1

    async def judgments_of(self, tenant: str, name: str) -> list[dict[str, Any]] | None:
        """Every judgment of a dataset, in upload order (for training); None when the tenant
        has no dataset of that name, or one still uploading."""
        found = await self.datasets.find_one({"_id": f"{tenant}/{name}"}, projection={"status": 1})
        if found is None or found.get("status") != "ready":
            return None
        cursor = self.judgments.find({"dataset": f"{tenant}/{name}"}, projection={"_id": 0, "dataset": 0}
                                     ).sort("line", ASCENDING)
        return [row async for row in cursor]

    async def list(self, tenant: str | None = None) -> list[dict[str, Any]]:
        query = {"tenant": tenant} if tenant is not None else {}
        cursor = self.datasets.find(query, projection={"rejects": 0}).sort([("tenant", 1), ("name", 1)])
        return [_public(doc) async for doc in cursor]


def _public(doc: dict[str, Any]) -> dict[str, Any]:
    doc = dict(doc)
    doc.pop("_id", None)
    return doc
