"""A/B split and online metrics for the gateway: the split config (cached briefly, so a change
reaches every gateway process within `ab_split_cache_s`) and click-through / MRR per model
version from the session documents (cached for `ab_metrics_cache_s`)."""

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
        self._split: tuple[float, ABSplit | None] | None = None
        self._metrics: tuple[float, dict[str, dict[str, float]], int] | None = None
        self._lock = asyncio.Lock()
        self._refresh: asyncio.Task[None] | None = None  # kept so the task is not collected

    async def split(self) -> ABSplit | None:
        cached = self._split
        if cached is not None and time.monotonic() - cached[0] < self.settings.ab_split_cache_s:
            return cached[1]
        split = await self.splits.get_split()
        self._split = (time.monotonic(), split)
        return split

    def forget_split(self) -> None:
        self._split = None

    async def online_metrics(self, sessions: MongoSessionStore) -> tuple[dict[str, dict[str, float]], int]:
        """Per version {searches, clicked_searches, sessions, ctr, mrr}; and the sessions read.

        Stale while revalidating: once computed, a request gets the figures at hand at once
        and an outdated cache is recomputed in the background, so no request waits on
        folding thousands of session documents."""
        cached = self._metrics
        if cached is None:
            await self._recompute(sessions)
        elif time.monotonic() - cached[0] >= self.settings.ab_metrics_cache_s and not self._lock.locked():
            self._refresh = asyncio.create_task(self._recompute(sessions))
        assert self._metrics is not None
        return self._metrics[1], self._metrics[2]

    async def _recompute(self, sessions: MongoSessionStore) -> None:
        async with self._lock:
            cached = self._metrics
            if cached is not None and time.monotonic() - cached[0] < self.settings.ab_metrics_cache_s:
                return
            since = datetime.now(UTC) - timedelta(days=self.settings.ab_metrics_window_days)
            limit = self.settings.ab_metrics_max_sessions
            metrics, read = await collect_online_metrics(sessions, since, limit)
            self._metrics = (time.monotonic(), metrics, read)

    async def improver_states(self) -> dict[str, dict[str, Any]]:
        return await self.adjustments.all_states()

    async def close(self) -> None:
        """Nothing of its own to close: it borrows the store's pool."""
