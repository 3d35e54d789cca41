"""In-memory fakes of the sources ports (core.ports: SourceStore, SourceDatabase, ConnectorControl)."""

from __future__ import annotations

from typing import Any

from core.source_admin import SourceAdmin
from core.sources import SourceError, SourceSpec


class FakeStore:
    def __init__(self) -> None:
        self.specs: dict[str, SourceSpec] = {}
        self.items: dict[tuple[str, str], list[str]] = {}

    async def add(self, spec: SourceSpec) -> bool:
        if spec.name in self.specs:
            return False
        self.specs[spec.name] = spec
        return True

    async def get(self, name: str) -> SourceSpec | None:
        return self.specs.get(name)

    async def list_sources(self, tenant: str | None = None) -> list[SourceSpec]:
        return [s for s in self.specs.values() if tenant is None or s.tenant == tenant]

    async def remove(self, name: str) -> bool:
        return self.specs.pop(name, None) is not None

    async def item_ids(self, tenant: str, source: str, metadata_key: str) -> list[str]:
        return self.items.get((tenant, source), [])

    async def close(self) -> None:
        pass


class FakeDatabase:
    def __init__(self, problem: str | None = None) -> None:
        self.problem = problem
        self.forgotten: list[str] = []

    async def check(self, spec: SourceSpec) -> None:
        if self.problem:
            raise SourceError(self.problem)

    async def forget(self, spec: SourceSpec) -> None:
        self.forgotten.append(spec.name)


class FakeConnect:
    def __init__(self) -> None:
        self.connectors: dict[str, dict[str, str]] = {}

    async def put(self, name: str, config: dict[str, str]) -> None:
        self.connectors[name] = config

    async def status(self, name: str) -> dict[str, Any] | None:
        if name not in self.connectors:
            return None
        return {"connector": {"state": "RUNNING"}, "tasks": [{"state": "RUNNING"}]}

    async def delete(self, name: str) -> bool:
        return self.connectors.pop(name, None) is not None

    async def close(self) -> None:
        pass


def admin(database: FakeDatabase | None = None) -> tuple[SourceAdmin, FakeStore, FakeConnect, dict[str, Any]]:
    store, connect, seen = FakeStore(), FakeConnect(), {"topics": {}, "deleted": []}

    async def create_topics(topics: dict[str, int]) -> None:
        seen["topics"].update(topics)

    async def delete_items(tenant: str, ids: list[str]) -> int:
        seen["deleted"] += [(tenant, i) for i in ids]
        return len(ids)

    sources = SourceAdmin(store, database or FakeDatabase(), connect, create_topics, delete_items,
                          "cdc", 3, "k:9092")
    return sources, store, connect, seen
