"""Publish a stream of JSON-like items, one per input line: validate each, send the valid
ones pipelined, and record every reject with its line number and reason."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from producers.publisher import Publisher, PublisherError
from schemas.codec import EventValidationError
from schemas.topics import TopicSpec


@dataclass(frozen=True)
class SourceError:
    """A line that could not even be read as an event (bad JSON, unmapped column...)."""

    reason: str


@dataclass(frozen=True)
class Item:
    line: int
    raw: str
    data: Any  # the parsed value, or a SourceError


@dataclass(frozen=True)
class Reject:
    line: int
    reason: str
    raw: str
    errors: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> str:
        record: dict[str, Any] = {"line": self.line, "reason": self.reason}
        if self.errors:
            record["errors"] = self.errors
        record["raw"] = self.raw
        return json.dumps(record, ensure_ascii=False)


class RejectsFile:
    """Rejects as JSON Lines; the file is created on the first reject (a stale one is removed)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._handle: IO[str] | None = None
        path.unlink(missing_ok=True)

    def write(self, reject: Reject) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("w", encoding="utf-8")
        self._handle.write(reject.to_json() + "\n")
        self.count += 1

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> RejectsFile:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@dataclass
class BulkResult:
    sent: int = 0
    rejected: int = 0
    elapsed_s: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0


def read_json_lines(stream: Iterable[str]) -> Iterator[Item]:
    """Items of a JSON Lines stream; blank lines are skipped, bad JSON becomes a SourceError."""
    for number, line in enumerate(stream, start=1):
        raw = line.rstrip("\r\n")
        if not raw.strip():
            continue
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as error:
            data = SourceError(f"invalid JSON: {error}")
        yield Item(number, raw, data)


def check_item(publisher: Publisher, spec: TopicSpec, item: Item) -> Any:
    """The item's outgoing record, or a Reject."""
    if isinstance(item.data, SourceError):
        return Reject(item.line, item.data.reason, item.raw)
    try:
        return publisher.prepare(spec, item.data)
    except EventValidationError as error:
        return Reject(
            item.line, str(error), item.raw, [{"loc": e.loc, "msg": e.msg} for e in error.errors]
        )


async def publish_items(
    publisher: Publisher,
    spec: TopicSpec,
    items: Iterable[Item],
    rejects: RejectsFile,
    *,
    limit: Callable[[], Awaitable[None]],
    on_progress: Callable[[int], None] = lambda n: None,
    window: int = 1000,
) -> BulkResult:
    result = BulkResult()
    began = time.monotonic()
    pending: list[tuple[Item, Any]] = []

    async def drain() -> None:
        for item, future in pending:
            try:
                await future
                result.sent += 1
            except Exception as error:  # a delivery failure rejects the line, the rest go on
                rejects.write(Reject(item.line, f"delivery failed: {error!r}", item.raw))
                result.rejected += 1
        on_progress(len(pending))
        pending.clear()

    for item in items:
        checked = check_item(publisher, spec, item)
        if isinstance(checked, Reject):
            rejects.write(checked)
            result.rejected += 1
            on_progress(1)
            continue
        await limit()
        try:
            pending.append((item, await publisher.enqueue(checked)))
        except PublisherError as error:
            rejects.write(Reject(item.line, str(error), item.raw))
            result.rejected += 1
            on_progress(1)
        if len(pending) >= window:
            await drain()
    await drain()
    result.elapsed_s = time.monotonic() - began
    return result
