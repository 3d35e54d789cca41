"""Finding the poison records of a batch: a batch that fails for a reason that retrying
cannot fix is split in halves until the failing records stand alone; they are returned
(to be dead-lettered) and every other record is processed, in order."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


async def process_isolating_poison(
    items: Sequence[T],
    process: Callable[[Sequence[T]], Awaitable[None]],
    is_transient: Callable[[BaseException], bool],
) -> list[tuple[T, BaseException]]:
    """Process `items`; transient errors propagate (the whole batch is retried), others are
    narrowed down to single items. Processing must be idempotent: halves that succeeded are
    processed again when a later transient error rewinds the batch."""
    try:
        await process(items)
        return []
    except Exception as error:
        if is_transient(error):
            raise
        if len(items) == 1:
            return [(items[0], error)]
    middle = len(items) // 2
    poisoned = await process_isolating_poison(items[:middle], process, is_transient)
    return poisoned + await process_isolating_poison(items[middle:], process, is_transient)
