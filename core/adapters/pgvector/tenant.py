"""One tenant's view of the vector store: its model lineage (active version, rollback target,
versions being built or failed) and the writes and reads of its items, through the shared
store. What handlers that act for one tenant (search, rollout, reindex, training, the A/B
split) are given, so that they cannot reach another tenant's lineage."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from core.domain import ChunkVectors, Expected, Item
from core.snippets import ItemView

if TYPE_CHECKING:
    from core.adapters.pgvector.store import PgVectorStore
    from core.adapters.pgvector.versions import RolloutState


class TenantStore:
    def __init__(self, store: PgVectorStore, tenant: str) -> None:
        self.store = store
        self.tenant = tenant

    # --- the tenant's lineage ------------------------------------------------------------------
    async def active_version(self) -> str | None:
        return await self.store.active_version(self.tenant)

    async def writable_versions(self) -> list[str]:
        return await self.store.writable_versions(self.tenant)

    async def rollout_state(self) -> RolloutState:
        return await self.store.rollout_state(self.tenant)

    async def list_versions(self) -> list[dict[str, Any]]:
        return await self.store.list_versions(self.tenant)

    async def ensure_version(self, version: str, dim: int, status: str = "building",
                             fusion_weight: float | None = None) -> None:
        """The version in this tenant's lineage; a new non-base version is owned by it."""
        from core.serving import BASE_SERVING_VERSION

        owner = None if version == BASE_SERVING_VERSION else self.tenant
        await self.store.ensure_version(self.tenant, version, dim, status, owner=owner,
                                        fusion_weight=fusion_weight)

    async def activate(self, version: str, expected: Expected | None = None) -> str | None:
        return await self.store.activate(self.tenant, version, expected)

    async def finish_version(self, version: str) -> None:
        await self.store.finish_version(self.tenant, version)

    async def fail_version(self, version: str, reason: str) -> bool:
        return await self.store.fail_version(self.tenant, version, reason)

    # --- the tenant's items (reindex support) ----------------------------------------------------
    async def missing_items(self, version: str, limit: int = 256) -> list[Item]:
        return await self.store.missing_items(version, limit, tenant=self.tenant)

    async def delete_orphans(self, version: str) -> int:
        return await self.store.delete_orphans(version, tenant=self.tenant)

    async def item_versions(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        return await self.store.item_versions(keys)

    # --- shared: the catalogue, writes and reads keyed by tenant ---------------------------------
    async def dimensions(self) -> dict[str, int]:
        return await self.store.dimensions()

    async def fusion_weight(self, version: str) -> float | None:
        return await self.store.fusion_weight(version)

    async def pending(
        self, wanted: dict[tuple[str, str], int], versions: Sequence[str]
    ) -> dict[str, set[tuple[str, str]]]:
        return await self.store.pending(wanted, versions)

    async def apply(self, upserts: dict[str, list[ChunkVectors]], deletes: Sequence[tuple[str, str]]) -> int:
        return await self.store.apply(upserts, deletes)

    # Reads pass through as they are (their parameters are the store's).
    async def vector_search(self, *args: Any, **kwargs: Any) -> list[tuple[str, float]]:
        return await self.store.vector_search(*args, **kwargs)

    async def text_search(self, *args: Any, **kwargs: Any) -> list[tuple[str, float]]:
        return await self.store.text_search(*args, **kwargs)

    async def describe(self, *args: Any, **kwargs: Any) -> dict[str, tuple[str, dict[str, Any]]]:
        return await self.store.describe(*args, **kwargs)

    async def describe_best(self, *args: Any, **kwargs: Any) -> dict[str, ItemView]:
        return await self.store.describe_best(*args, **kwargs)
