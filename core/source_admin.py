"""Adding and removing sources (see core.sources), over ports.

Adding: check the source database can be captured as asked (clear errors naming the fix),
store the spec (so the mapper knows it before its first change arrives), create the change
topic and its dead-letter topic, then register the Debezium connector, which snapshots the
table and streams every later change. Removing: delete the connector, drop the replication
slot and publication in the source database, forget the spec, and, if asked, delete the
items the source wrote (tombstones on content-upserted, so every index follows).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from core.ports import ConnectorControl, SourceDatabase, SourceStore
from core.sources import (
    SOURCE_METADATA_KEY,
    SourceError,
    SourceSpec,
    change_topic,
    connector_config,
    connector_name,
)


class SourceExists(SourceError):
    """A source of that name is registered already."""


class UnknownSource(LookupError):
    """No source of that name is registered."""


@dataclass
class SourceAdmin:
    store: SourceStore
    database: SourceDatabase
    connect: ConnectorControl
    # topic name -> partitions; creates those missing
    create_topics: Callable[[dict[str, int]], Awaitable[Any]]
    # (tenant, item ids) -> tombstones published
    delete_items: Callable[[str, list[str]], Awaitable[int]]
    topic_prefix: str
    partitions: int
    kafka_bootstrap: str
    status_polls: int = 20

    async def add(self, spec: SourceSpec) -> dict[str, Any]:
        await self.database.check(spec)
        if not await self.store.add(spec):
            raise SourceExists(f"a source named {spec.name!r} exists already; remove it first or pick "
                               "another name")
        topic = change_topic(spec, self.topic_prefix)
        try:
            await self.create_topics({topic: self.partitions, f"{topic}.dlq": self.partitions})
            await self.connect.put(connector_name(spec.name), connector_config(
                spec, self.topic_prefix, self.partitions, self.kafka_bootstrap))
        except Exception:
            await self.store.remove(spec.name)
            raise
        # Connect lists a new connector's status a moment after accepting it.
        for _ in range(self.status_polls):
            if await self.connect.status(connector_name(spec.name)) is not None:
                break
            await asyncio.sleep(0.5)
        return await self.show(spec.name)

    async def show(self, name: str, tenant: str | None = None) -> dict[str, Any]:
        spec = await self.store.get(name)
        if spec is None or (tenant is not None and spec.tenant != tenant):
            raise UnknownSource(f"no source named {name!r}")
        status = await self.connect.status(connector_name(name))
        return {**spec.public(), "topic": change_topic(spec, self.topic_prefix),
                "connector": _connector_state(status)}

    async def list_sources(self, tenant: str | None = None) -> list[dict[str, Any]]:
        return [await self.show(spec.name) for spec in await self.store.list_sources(tenant)]

    async def close(self) -> None:
        await self.store.close()
        await self.connect.close()

    async def remove(
        self, name: str, delete_items: bool = False, tenant: str | None = None,
    ) -> dict[str, Any]:
        spec = await self.store.get(name)
        if spec is None or (tenant is not None and spec.tenant != tenant):
            raise UnknownSource(f"no source named {name!r}")
        await self.connect.delete(connector_name(name))
        await self.database.forget(spec)
        deleted = 0
        if delete_items:
            ids = await self.store.item_ids(spec.tenant, spec.name, SOURCE_METADATA_KEY)
            deleted = await self.delete_items(spec.tenant, ids)
        await self.store.remove(name)
        return {"name": name, "removed": True, "items_deleted": deleted}


def _connector_state(status: dict[str, Any] | None) -> dict[str, Any]:
    if status is None:
        return {"state": "MISSING"}
    tasks = status.get("tasks") or []
    state = {"state": status.get("connector", {}).get("state", "UNKNOWN"),
             "tasks": [task.get("state") for task in tasks]}
    errors = [task["trace"].splitlines()[0] for task in tasks if task.get("trace")]
    if errors:
        state["error"] = errors[0][:500]
    return state
