"""In-memory fakes of the ports, for unit tests of handlers only."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from core.domain import ChunkVectors, Embeddings, Item

Key = tuple[str, str]


class FakeEmbedder:
    """Deterministic unit vectors from a hash of the text and the model version."""

    def __init__(self, dim: int = 8, max_batch_size: int = 4) -> None:
        self.dim = dim
        self.max_batch_size = max_batch_size
        self.calls: list[tuple[list[str], str]] = []
        self.lanes: list[str] = []

    async def embed(self, texts: Sequence[str], model_version: str, *, lane: str = "bulk") -> Embeddings:
        self.calls.append((list(texts), model_version))
        self.lanes.append(lane)
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(f"{model_version}:{text}".encode()).digest()[:8], "big")
            vector = np.random.default_rng(seed).normal(size=self.dim)
            rows.append(vector / np.linalg.norm(vector))
        return Embeddings(np.asarray(rows, dtype=np.float32).reshape(-1, self.dim), "fake", model_version)


class FakeStore:
    def __init__(self, versions: Sequence[str] = ("1",)) -> None:
        self.versions = list(versions)
        self.items: dict[Key, Item] = {}
        self.chunks: dict[str, dict[Key, ChunkVectors]] = {v: {} for v in versions}
        self.fusion_weights: dict[str, float] = {}
        self.transactions = 0

    async def writable_versions(self) -> list[str]:
        return list(self.versions)

    async def active_version(self) -> str | None:
        return self.versions[0] if self.versions else None

    async def dimensions(self) -> dict[str, int]:
        return dict.fromkeys(self.chunks, 8)

    async def fusion_weight(self, version: str) -> float | None:
        return self.fusion_weights.get(version)

    def _due(self, key: Key, item_version: int, version: str) -> bool:
        stored = self.items[key].version if key in self.items else 0
        embedded = self.chunks[version][key].item.version if key in self.chunks[version] else 0
        return item_version >= stored and item_version > embedded

    async def pending(self, wanted: dict[Key, int], versions: Sequence[str]) -> dict[str, set[Key]]:
        return {v: {k for k, iv in wanted.items() if self._due(k, iv, v)} for v in versions}

    async def apply(self, upserts: dict[str, list[ChunkVectors]], deletes: Sequence[Key]) -> int:
        self.transactions += 1
        changed = 0
        for chunk_sets in upserts.values():
            for c in chunk_sets:
                key = (c.item.tenant, c.item.id)
                if key not in self.items or self.items[key].version < c.item.version:
                    self.items[key] = c.item
                    changed += 1
        for version, chunk_sets in upserts.items():
            for c in chunk_sets:
                key = (c.item.tenant, c.item.id)
                if self._due(key, c.item.version, version):
                    self.chunks[version][key] = c
        for key in deletes:
            changed += key in self.items
            self.items.pop(key, None)
            for table in self.chunks.values():
                table.pop(key, None)
        return changed

    async def vector_search(self, version: str, tenant: str, query: np.ndarray, k: int,
                            filters: dict[str, Any]) -> list[tuple[str, float]]:
        scored = [
            (key[1], float(np.max(c.vectors @ query)))
            for key, c in self.chunks[version].items()
            if key[0] == tenant and all(c.item.metadata.get(f) == v for f, v in filters.items())
        ]
        return sorted(scored, key=lambda pair: -pair[1])[:k]

    async def text_search(self, tenant: str, query: str, k: int,
                          filters: dict[str, Any]) -> list[tuple[str, float]]:
        words = set(query.lower().split())
        scored = [
            (key[1], float(len(words & set(f"{item.title} {item.text}".lower().split()))))
            for key, item in self.items.items() if key[0] == tenant
        ]
        return sorted([s for s in scored if s[1] > 0], key=lambda pair: -pair[1])[:k]

    async def describe(self, tenant: str, ids: Sequence[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        return {i: (self.items[(tenant, i)].title, self.items[(tenant, i)].metadata)
                for i in ids if (tenant, i) in self.items}
