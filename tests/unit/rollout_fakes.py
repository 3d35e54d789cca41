"""In-memory fakes for the deployer and reindexer handlers (tasks, Triton control, replay)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.domain import ConcurrentChange, Expected, Item
from schemas import codec
from schemas.content import ContentUpserted
from tests.unit.fakes import FakeEmbedder, FakeStore

Key = tuple[str, str]


class FakeTasks:
    def __init__(self) -> None:
        self.tasks: dict[str, dict[str, Any]] = {}
        self.updates: list[tuple[str, dict[str, Any]]] = []

    async def create(
        self, task_id: str, type: Any, tenant: str, details: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], bool]:
        if task_id in self.tasks:
            return dict(self.tasks[task_id]), False
        self.tasks[task_id] = {
            "id": task_id, "type": type, "tenant": tenant, "status": "pending", "stage": "queued",
            "progress": 0.0, "error": None, "details": dict(details or {}),
        }
        return dict(self.tasks[task_id]), True

    async def update(self, task_id: str, **fields: Any) -> dict[str, Any] | None:
        self.updates.append((task_id, fields))
        task = self.tasks.get(task_id)
        if task is None:
            return None
        for name, value in fields.items():
            if name.startswith("details."):
                task["details"][name.removeprefix("details.")] = value
            else:
                task[name] = value
        return dict(task)


class FakeServingEmbedder(FakeEmbedder):
    def __init__(self, served: set[str] | None = None, dim: int = 8) -> None:
        super().__init__(dim=dim)
        self.served = served if served is not None else {"1"}

    async def ready(self, model_version: str) -> bool:
        return model_version in self.served


class FakeModelServer:
    """A model repository plus a server that loads every version not marked broken; `loads`
    counts the loads that changed what it serves."""

    def __init__(self, embedder: FakeServingEmbedder, broken: set[int] | None = None) -> None:
        self.embedder = embedder
        self.repo: dict[int, Path] = {1: Path("/base")}
        self.parked: dict[int, Path] = {}
        self.broken = broken or set()
        self.loads = 0

    def has_version(self, version: int) -> bool:
        return version in self.repo

    def place_version(self, version: int, model_dir: Path) -> None:
        self.repo.setdefault(version, model_dir)

    def remove_version(self, version: int) -> None:
        self.repo.pop(version, None)

    def repository_versions(self) -> list[int]:
        return sorted(self.repo)

    def placed_since(self, when: float) -> set[int]:
        return set()

    def parked_versions(self) -> list[int]:
        return sorted(self.parked)

    def park_version(self, version: int) -> None:
        if version in self.repo:
            self.parked[version] = self.repo.pop(version)

    def restore_version(self, version: int) -> None:
        if version in self.parked:
            self.repo[version] = self.parked.pop(version)

    async def load(self, retry_failed: bool = True) -> None:
        served = {str(v) for v in self.repo if v not in self.broken}
        if served != self.embedder.served:
            self.loads += 1
        self.embedder.served = served

    async def is_ready(self, version: str) -> bool:
        return version in self.embedder.served

    async def version_states(self) -> dict[str, tuple[str, str]]:
        return {str(v): ("UNAVAILABLE", "failed to load model.py") if v in self.broken else ("READY", "")
                for v in self.repo}

    def serving_decision(self, version: int) -> dict[str, Any] | None:
        if str(version) not in self.embedder.served:
            return None
        return {"form": "bf16", "reason": "bf16: 2.00x fp32's texts/s",
                "texts_per_s": {"fp32": 50.0, "bf16": 100.0},
                "quality": {"bf16": {"ndcg_at_10": 0.99, "ndcg_at_10_vs_fp32": 1.0,
                                     "min_cosine_to_fp32": 0.9999}},
                "size_bytes": 1000, "device": "cpu", "precision": "auto"}


class FakeReindexStore(FakeStore):
    """FakeStore with model-version bookkeeping (building / active / retired): one tenant's
    lineage; with `tenant`, a reindex's view, which reconciles only that tenant's items."""

    def __init__(self, tenant: str | None = None) -> None:
        super().__init__(versions=("1",))
        self.tenant = tenant
        self.status: dict[str, str] = {"1": "active"}
        self.order: list[str] = ["1"]
        self.reasons: dict[str, str] = {}

    async def writable_versions(self) -> list[str]:
        retired = [v for v in reversed(self.order) if self.status[v] == "retired"][:1]
        return [v for v in self.chunks if self.status[v] in ("active", "building") or v in retired]

    async def active_version(self) -> str | None:
        return next((v for v, s in self.status.items() if s == "active"), None)

    async def ensure_version(self, version: str, dim: int, status: str = "building",
                             fusion_weight: float | None = None) -> None:
        self.chunks.setdefault(version, {})
        if fusion_weight is not None:
            self.fusion_weights.setdefault(version, fusion_weight)
        self.status.setdefault(version, status)
        if self.status[version] == "failed":
            self.status[version] = "building"
            self.reasons.pop(version, None)

    async def activate(self, version: str, expected: Expected | None = None) -> str | None:
        if version not in self.status:
            raise KeyError(version)
        previous = await self.active_version()
        if expected is not None and previous != version:
            if previous != expected.active:
                raise ConcurrentChange(f"the active version changed from {expected.active} to {previous}")
            if expected.status is not None and self.status[version] != expected.status:
                raise ConcurrentChange(f"model version {version} changed to {self.status[version]}")
            if self.status[version] == "retired" and version not in await self.writable_versions():
                raise ConcurrentChange(f"model version {version} stopped receiving new content")
        if previous is not None and previous != version:
            self.status[previous] = "retired"
        self.status[version] = "active"
        self.order = [v for v in self.order if v != version] + [version]
        return previous

    async def finish_version(self, version: str) -> None:
        if self.status.get(version) == "building":
            self.status[version] = "retired"
            self.order = [v for v in self.order if v != version] + [version]

    async def fail_version(self, version: str, reason: str) -> bool:
        if self.status.get(version) != "building":
            return False
        self.status[version] = "failed"
        self.reasons[version] = reason
        return True

    async def list_versions(self) -> list[dict[str, Any]]:
        return [{"version": v, "dim": 8, "status": s, "reason": self.reasons.get(v)}
                for v, s in self.status.items()]

    async def item_versions(self, keys: Any) -> dict[Key, int]:
        return {k: self.items[k].version for k in keys if k in self.items}

    async def missing_items(self, version: str, limit: int = 256) -> list[Item]:
        """Of the store's tenant when it has one (a tenant's view, as the reindexer gets)."""
        table = self.chunks[version]
        return [item for key, item in sorted(self.items.items())
                if (self.tenant is None or key[0] == self.tenant)
                and (key not in table or table[key].item.version < item.version)][:limit]

    async def delete_orphans(self, version: str) -> int:
        orphans = [k for k in self.chunks[version] if k not in self.items
                   and (self.tenant is None or k[0] == self.tenant)]
        for key in orphans:
            del self.chunks[version][key]
        return len(orphans)


@dataclass
class FakeRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = 0
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class FakeLog:
    """A content-upserted topic: partitions of records, and the committed offsets per group."""

    partitions: dict[int, list[FakeRecord]] = field(default_factory=lambda: {0: [], 1: []})
    committed: dict[str, dict[int, int]] = field(default_factory=dict)
    crash_after_commits: int | None = None
    commits: int = 0
    # Called after each commit: what happens elsewhere while a backfill runs.
    after_commit: Callable[[], Awaitable[None]] | None = None

    def upsert(self, tenant: str, item_id: str, text: str, version: int, partition: int = 0) -> None:
        event = ContentUpserted(id=item_id, tenant=tenant, text=text, title=item_id, version=version)
        self._append(partition, event.key.encode(), codec.encode(event))

    def delete(self, tenant: str, item_id: str, partition: int = 0) -> None:
        self._append(partition, f"{tenant}/{item_id}".encode(), None)

    def _append(self, partition: int, key: bytes, value: bytes | None) -> None:
        records = self.partitions[partition]
        records.append(FakeRecord("content-upserted", partition, len(records), key, value))

    @asynccontextmanager
    async def open(self, group: str) -> AsyncIterator[FakeReplay]:
        yield FakeReplay(self, group)


class Crash(RuntimeError):
    pass


class FakeReplay:
    def __init__(self, log: FakeLog, group: str) -> None:
        self.log = log
        self.group = group
        self.positions: dict[int, int] = {}

    async def end_offsets(self) -> dict[int, int]:
        return {p: len(r) for p, r in self.log.partitions.items()}

    async def resume(self, from_offset: int) -> dict[int, int]:
        committed = self.log.committed.get(self.group, {})
        self.positions = {p: committed.get(p, from_offset) for p in self.log.partitions}
        return dict(self.positions)

    async def fetch(self, ends: dict[int, int], max_records: int) -> tuple[list[Any], dict[int, int]]:
        out: list[Any] = []
        for p, records in self.log.partitions.items():
            take = [r for r in records[self.positions[p]:ends[p]]][: max_records - len(out)]
            out += take
            self.positions[p] += len(take)
        return out, dict(self.positions)

    async def commit(self, positions: dict[int, int]) -> None:
        if self.log.crash_after_commits is not None and self.log.commits >= self.log.crash_after_commits:
            raise Crash("killed")
        self.log.commits += 1
        self.log.committed.setdefault(self.group, {}).update(positions)
        if self.log.after_commit is not None:
            hook, self.log.after_commit = self.log.after_commit, None
            await hook()
