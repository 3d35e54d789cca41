"""The ports handlers depend on. Adapters implement them against real components; unit
tests implement them in memory."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from core.domain import ChunkVectors, Embeddings


class DependencyUnavailable(RuntimeError):
    """A component an adapter talks to is down or failing: the work is retried later, it is
    not the input's fault."""


class Embedder(Protocol):
    max_batch_size: int

    async def embed(self, texts: Sequence[str], model_version: str) -> Embeddings:
        """L2-normalised vectors for `texts`, by the given model version."""
        ...


class VectorStore(Protocol):
    async def writable_versions(self) -> list[str]:
        """The active version and any version being built: every write goes to all of them."""
        ...

    async def active_version(self) -> str | None: ...

    async def dimensions(self) -> dict[str, int]:
        """The vector dimension of every model version with an index."""
        ...

    async def pending(
        self, wanted: dict[tuple[str, str], int], versions: Sequence[str]
    ) -> dict[str, set[tuple[str, str]]]:
        """Per model version, the (tenant, id) keys whose chunks need (re-)embedding."""
        ...

    async def apply(
        self,
        upserts: dict[str, list[ChunkVectors]],
        deletes: Sequence[tuple[str, str]],
    ) -> int:
        """In one transaction: upsert items (only over a lower version) with their chunks per
        model version, and delete (tenant, id) items with their chunks. Returns items changed."""
        ...

    async def vector_search(
        self, version: str, tenant: str, query: np.ndarray, k: int, filters: dict[str, Any]
    ) -> list[tuple[str, float]]: ...

    async def text_search(
        self, tenant: str, query: str, k: int, filters: dict[str, Any]
    ) -> list[tuple[str, float]]: ...

    async def describe(self, tenant: str, ids: Sequence[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        """Title and metadata of each item."""
        ...


class Tasks(Protocol):
    """Long-running task records (core.adapters.task_store.TaskStore)."""

    async def create(
        self, task_id: str, type: Any, tenant: str, details: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], bool]:
        """The task with this id, created as pending if new; the flag says whether it was."""
        ...

    async def update(self, task_id: str, **fields: Any) -> dict[str, Any] | None: ...
