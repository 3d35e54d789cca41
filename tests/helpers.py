"""Small helpers shared by the test modules that run against the real stack."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], timeout_s: float = 120.0, every_s: float = 0.3,
    what: str = "condition",
) -> None:
    """Poll `predicate` until it holds; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met in {timeout_s:.0f} s")
        await asyncio.sleep(every_s)
