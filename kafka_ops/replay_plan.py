"""Pure planning for `flywheel replay`: where a group's offsets go, which slice a copy covers,
and the durable progress of a copy."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class PartitionReset:
    """One partition of a group reset."""

    partition: int
    current: int | None  # committed offset; None when the group never committed here
    new: int
    end: int
    window_end: int | None = None  # first offset at or after --to, when given

    @property
    def again(self) -> int:
        """Events the group will consume again (negative: events it will skip)."""
        if self.current is None:
            return self.end - self.new
        return self.current - self.new

    @property
    def in_window(self) -> int | None:
        return None if self.window_end is None else max(0, self.window_end - self.new)


def plan_reset(
    partitions: list[int],
    committed: dict[int, int | None],
    at_from: dict[int, int | None],
    end: dict[int, int],
    at_to: dict[int, int | None] | None = None,
) -> list[PartitionReset]:
    """New committed offsets: the first offset at or after TIME, or the END of a partition
    with nothing at or after TIME (never its start)."""
    plan = []
    for p in sorted(partitions):
        new = at_from.get(p)
        if new is None:
            new = end[p]
        window_end = None
        if at_to is not None:
            found = at_to.get(p)
            window_end = end[p] if found is None else found
        plan.append(PartitionReset(p, committed.get(p), new, end[p], window_end))
    return plan


@dataclass(frozen=True)
class SliceRange:
    start: int
    stop: int  # exclusive

    @property
    def size(self) -> int:
        return self.stop - self.start


def plan_slice(
    partitions: list[int],
    at_from: dict[int, int | None],
    at_to: dict[int, int | None],
    end: dict[int, int],
) -> dict[int, SliceRange]:
    """Offsets [first at/after FROM, first at/after TO) per partition; a partition with
    nothing at or after a time uses its end offset, so the slice never reaches before FROM."""
    ranges = {}
    for p in sorted(partitions):
        start = at_from.get(p)
        start = end[p] if start is None else start
        stop = at_to.get(p)
        stop = end[p] if stop is None else stop
        ranges[p] = SliceRange(start, max(start, stop))
    return ranges


def target_partition(source_partition: int, target_partitions: int) -> int:
    """Same partition number when the target has enough, else folded (order per source kept)."""
    return source_partition % target_partitions


@dataclass
class CopyState:
    """Durable progress of a copy: written only after the sends it records were acked."""

    name: str
    topic: str
    into: str
    from_ms: int
    to_ms: int
    ranges: dict[int, SliceRange]
    next: dict[int, int] = field(default_factory=dict)
    copied: int = 0
    skipped: int = 0  # records inside the offsets but outside the time window

    def __post_init__(self) -> None:
        for p, r in self.ranges.items():
            self.next.setdefault(p, r.start)

    def remaining(self) -> dict[int, SliceRange]:
        return {p: SliceRange(self.next[p], r.stop) for p, r in self.ranges.items() if self.next[p] < r.stop}

    @property
    def complete(self) -> bool:
        return not self.remaining()

    @property
    def total(self) -> int:
        return sum(r.size for r in self.ranges.values())

    def to_json(self) -> str:
        data: dict[str, Any] = asdict(self)
        data["ranges"] = {str(p): [r.start, r.stop] for p, r in self.ranges.items()}
        data["next"] = {str(p): offset for p, offset in self.next.items()}
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> CopyState:
        data = json.loads(text)
        data["ranges"] = {int(p): SliceRange(*r) for p, r in data["ranges"].items()}
        data["next"] = {int(p): offset for p, offset in data["next"].items()}
        return cls(**data)


def save_state(path: Path, state: CopyState) -> None:
    """Atomically replace the state file (write, fsync, rename, fsync the directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(state.to_json())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def load_state(path: Path) -> CopyState | None:
    return CopyState.from_json(path.read_text()) if path.exists() else None
