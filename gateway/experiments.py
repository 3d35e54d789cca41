"""A/B split and online metrics for the gateway, per tenant: the tenant's split config (cached
briefly, so a change reaches every gateway process within `ab_split_cache_s`) and click-through
/ MRR per model version from the tenant's session documents (cached for `ab_metrics_cache_s`)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from core.ab import ABSplit, collect_online_metrics
from core.adapters.ab_split_store import PgSplitStore
from core.adapters.session_store import MongoSessionStore
from core.adapters.vector_adjustments import PgVectorAdjustments
from core.config import Settings


class Experiments:
    def __init__(self, settings: Settings, splits: PgSplitStore, adjustments: PgVectorAdjustments) -> None:
        self.settings = settings
        self.splits = splits
        self.adjustments = adjustments
        self._split: dict[str, tuple[float, ABSplit | None]] = {}
        self._metrics: dict[str, tuple[float, dict[str, dict[str, float]], int]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._refresh: dict[str, asyncio.Task[None]] = {}  # kept so the tasks are not collected

    async def split(self, tenant: str) -> ABSplit | None:
        cached = self._split.get(tenant)
        if cached is not None and time.monotonic() - cached[0] < self.settings.ab_split_cache_s:
            return cached[1]
        split = await self.splits.get_split(tenant)
        self._split[tenant] = (time.monotonic(), split)
        return split

    def forget_split(self, tenant: str) -> None:
        self._split.pop(tenant, None)

    async def online_metrics(self, sessions: MongoSessionStore, tenant: str
                             ) -> tuple[dict[str, dict[str, float]], int]:
        """Per version {searches, clicked_searches, sessions, ctr, mrr} over the tenant's
        sessions; and the sessions read.

        Stale while revalidating: once computed, a request gets the figures at hand at once
        and an outdated cache is recomputed in the background, so no request waits on
        folding thousands of session documents."""
        cached = self._metrics.get(tenant)
        lock = self._locks.setdefault(tenant, asyncio.Lock())
        if cached is None:
            await self._recompute(sessions, tenant)
        elif time.monotonic() - cached[0] >= self.settings.ab_metrics_cache_s and not lock.locked():
            self._refresh[tenant] = asyncio.create_task(self._recompute(sessions, tenant))
        metrics = self._metrics[tenant]
        return metrics[1], metrics[2]

    async def _recompute(self, sessions: MongoSessionStore, tenant: str) -> None:
        async with self._locks.setdefault(tenant, asyncio.Lock()):
            cached = self._metrics.get(tenant)
            if cached is not None and time.monotonic() - cached[0] < self.settings.ab_metrics_cache_s:
                return
            since = datetime.now(UTC) - timedelta(days=self.settings.ab_metrics_window_days)
            limit = self.settings.ab_metrics_max_sessions
            metrics, read = await collect_online_metrics(sessions.for_tenant(tenant), since, limit)
            self._metrics[tenant] = (time.monotonic(), metrics, read)

    async def improver_states(self, tenant: str) -> dict[str, dict[str, Any]]:
        """The improver's state of `tenant`'s adjustments, per version."""
        return await self.adjustments.all_states(tenant)

    async def close(self) -> None:
        """Nothing of its own to close: it borrows the store's pool."""
