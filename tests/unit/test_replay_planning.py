"""Pure parts of replay: TIME arguments, offset plans, copy progress."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kafka_ops.replay_plan import (
    CopyState,
    SliceRange,
    load_state,
    plan_reset,
    plan_slice,
    save_state,
    target_partition,
)
from kafka_ops.timespec import BadTime, parse_time

NOW = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "expected"), [
    ("now", NOW),
    ("-2h", NOW - timedelta(hours=2)),
    ("-30m", NOW - timedelta(minutes=30)),
    ("-1d", NOW - timedelta(days=1)),
    ("-1.5h", NOW - timedelta(minutes=90)),
    ("-45s", NOW - timedelta(seconds=45)),
    ("-1w", NOW - timedelta(weeks=1)),
    ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
    ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, tzinfo=UTC)),
    ("2024-05-01T12:00:00+02:00", datetime(2024, 5, 1, 10, tzinfo=UTC)),
    ("2024-05-01 10:00", datetime(2024, 5, 1, 10, tzinfo=UTC)),
])
def test_parse_time(text: str, expected: datetime) -> None:
    assert parse_time(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "2h", "-2x", "", "+2h"])
def test_parse_time_rejects_garbage(text: str) -> None:
    with pytest.raises(BadTime, match="ISO 8601"):
        parse_time(text, NOW)


def test_reset_moves_partitions_without_later_events_to_their_end() -> None:
    plan = plan_reset(
        [0, 1, 2],
        committed={0: 10, 1: 5, 2: None},
        at_from={0: 4, 1: None, 2: None},
        end={0: 10, 1: 5, 2: 3},
    )
    rows = {row.partition: row for row in plan}
    assert (rows[0].new, rows[0].again) == (4, 6)
    assert (rows[1].new, rows[1].again) == (5, 0)  # the end, never offset 0
    assert (rows[2].current, rows[2].new, rows[2].again) == (None, 3, 0)


def test_reset_reports_skips_and_window() -> None:
    [row] = plan_reset([0], committed={0: 2}, at_from={0: 6}, end={0: 9}, at_to={0: 8})
    assert row.again == -4 and row.in_window == 2
    [row] = plan_reset([0], committed={0: 2}, at_from={0: 6}, end={0: 9}, at_to={0: None})
    assert row.in_window == 3


def test_slice_is_empty_where_nothing_is_after_from() -> None:
    ranges = plan_slice([0, 1, 2], at_from={0: 3, 1: None, 2: 5}, at_to={0: 7, 1: None, 2: None},
                        end={0: 10, 1: 4, 2: 9})
    assert ranges == {0: SliceRange(3, 7), 1: SliceRange(4, 4), 2: SliceRange(5, 9)}


def test_target_partition() -> None:
    assert [target_partition(p, 3) for p in range(6)] == [0, 1, 2, 0, 1, 2]
    assert [target_partition(p, 6) for p in range(3)] == [0, 1, 2]


def test_copy_state_round_trips_and_tracks_what_remains(tmp_path: Path) -> None:
    state = CopyState("c", "a", "b", 1, 2, {0: SliceRange(3, 7), 1: SliceRange(4, 4)})
    assert state.remaining() == {0: SliceRange(3, 7)} and state.total == 4
    state.next[0] = 5
    path = tmp_path / "replay" / "c.json"
    save_state(path, state)
    loaded = load_state(path)
    assert loaded == state and loaded.remaining() == {0: SliceRange(5, 7)}
    loaded.next[0] = 7
    assert loaded.complete
    assert load_state(tmp_path / "missing.json") is None
    assert [p.name for p in path.parent.iterdir()] == ["c.json"]  # no temporary files left
