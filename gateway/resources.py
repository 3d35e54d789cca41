"""The gateway's connections, opened on first use so the gateway starts (and answers
/healthz and /readyz) while a dependency is still down; a failure answers 503."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from core.adapters.ab_split_store import PgSplitStore
from core.adapters.dataset_store import DatasetStore
from core.adapters.pgvector import PgVectorStore
from core.adapters.session_store import MongoSessionStore
from core.adapters.task_store import TaskStore
from core.adapters.triton_embedder import TritonEmbedder
from core.adapters.vector_adjustments import PgVectorAdjustments
from core.bootstrap import build_embedder, build_session_store, build_source_admin, build_store
from core.config import Settings
from core.source_admin import SourceAdmin
from gateway.experiments import Experiments
from gateway.problems import Problem
from gateway.security import KeyRing, RateLimiter, SharedRateLimiter
from producers.publisher import Publisher

log = logging.getLogger("flywheel.gateway")
T = TypeVar("T")


class Resources:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keyring = KeyRing.from_settings(settings)
        # Per-key token buckets in PostgreSQL, shared by every gateway process (in this
        # process's memory while PostgreSQL is down).
        memory = RateLimiter(settings.gateway_rate_per_s, settings.gateway_rate_burst)
        self.limiter: RateLimiter | SharedRateLimiter = SharedRateLimiter(self._store_pool, memory)
        self._opened: dict[str, Any] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def _get(self, name: str, factory: Callable[[], Awaitable[T]]) -> T:
        if name in self._opened:
            return self._opened[name]  # type: ignore[no-any-return]
        async with self._locks.setdefault(name, asyncio.Lock()):
            if name not in self._opened:
                try:
                    self._opened[name] = await asyncio.wait_for(factory(), timeout=15)
                except Exception as error:
                    log.warning("%s unavailable: %r", name, error)
                    raise Problem(503, f"{name} is unavailable: {error}",
                                  headers={"Retry-After": "5"}) from error
        return self._opened[name]  # type: ignore[no-any-return]

    async def publisher(self) -> Publisher:
        async def open_publisher() -> Publisher:
            publisher = Publisher(self.settings.bootstrap_servers, source="gateway")
            await publisher.start()
            return publisher
        return await self._get("kafka", open_publisher)

    async def store(self) -> PgVectorStore:
        return await self._get("postgres", lambda: build_store(self.settings))

    async def _store_pool(self) -> Any:
        return (await self.store()).pool

    async def embedder(self) -> TritonEmbedder:
        async def open_embedder() -> TritonEmbedder:
            return build_embedder(self.settings)
        return await self._get("triton", open_embedder)

    async def tasks(self) -> TaskStore:
        return await self._get(
            "mongodb", lambda: TaskStore.connect(self.settings.mongo_uri, self.settings.mongo_db)
        )

    async def datasets(self) -> DatasetStore:
        return await self._get(
            "mongodb-datasets", lambda: DatasetStore.connect(self.settings.mongo_uri, self.settings.mongo_db))

    async def sessions(self) -> MongoSessionStore:
        return await self._get("mongodb-sessions", lambda: build_session_store(self.settings))

    async def experiments(self) -> Experiments:
        store = await self.store()

        async def open_experiments() -> Experiments:
            return Experiments(self.settings, PgSplitStore(store.pool), PgVectorAdjustments(store.pool))
        return await self._get("experiments", open_experiments)

    async def sources(self) -> SourceAdmin:
        async def delete_items(tenant: str, ids: list[str]) -> int:
            publisher = await self.publisher()
            for item_id in ids:
                await publisher.delete_content(item_id, tenant)
            return len(ids)

        async def open_sources() -> SourceAdmin:
            return build_source_admin(self.settings, delete_items)
        return await self._get("sources", open_sources)

    async def close(self) -> None:
        for name, resource in list(self._opened.items()):
            try:
                if isinstance(resource, Publisher):
                    await resource.stop()
                else:
                    await resource.close()
            except Exception as error:  # closing is best effort at shutdown
                log.warning("closing %s: %r", name, error)
        self._opened.clear()
