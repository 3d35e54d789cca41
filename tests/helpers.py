"""Small helpers shared by the test modules that run against the real stack."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Awaitable, Callable

from core.config import Settings


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


def share_kafka_credentials(test_settings: Settings, settings: Settings) -> Settings:
    """`settings` (a stack with a state directory of its own over the test stack's broker)
    with the broker's principals and passwords: without them its services would make up
    passwords the broker never heard of."""
    target = settings.kafka_credentials_file
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(test_settings.kafka_credentials_file, target)
    return settings
