"""A token bucket for ``--max-rate``: at most ``rate`` events per second, small bursts allowed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class TokenBucket:
    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate / 10)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._last = clock()

    async def acquire(self, tokens: float = 1.0) -> None:
        while True:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= tokens - 1e-9:  # float rounding must not spin
                self._tokens -= tokens
                return
            await self._sleep((tokens - self._tokens) / self.rate)


async def unlimited() -> None:
    return None


def limiter(max_rate: float | None) -> Callable[[], Awaitable[None]]:
    """``await limit()`` before each event; no-op without a rate."""
    return TokenBucket(max_rate).acquire if max_rate else unlimited
