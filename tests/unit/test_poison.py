"""Poison isolation: only the failing records are set aside, the rest processed in order."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from consumers.poison import process_isolating_poison


class Transient(Exception):
    pass


async def test_poison_records_are_isolated_and_the_rest_processed_in_order() -> None:
    done: list[int] = []

    async def process(items: Sequence[int]) -> None:
        if 3 in items or 6 in items:
            raise ValueError("cannot store")
        done.extend(items)

    poisoned = await process_isolating_poison(list(range(8)), process, lambda e: isinstance(e, Transient))
    assert [item for item, _ in poisoned] == [3, 6]
    assert done == [0, 1, 2, 4, 5, 7]


async def test_transient_errors_fail_the_whole_batch() -> None:
    async def process(items: Sequence[int]) -> None:
        raise Transient("database restarting")

    with pytest.raises(Transient):
        await process_isolating_poison([1, 2, 3], process, lambda e: isinstance(e, Transient))


async def test_a_healthy_batch_is_processed_once() -> None:
    calls: list[Sequence[int]] = []

    async def process(items: Sequence[int]) -> None:
        calls.append(items)

    assert await process_isolating_poison([1, 2], process, lambda e: False) == []
    assert calls == [[1, 2]]
