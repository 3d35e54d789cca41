"""Bulk publishing without a broker: rejects with line numbers, rate limit, corpus loaders."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest

from producers.bulk import RejectsFile, SourceError, publish_items, read_json_lines
from producers.loaders import CorpusFormat, FieldMap, read_corpus
from producers.publisher import BatchValidationError, OutgoingRecord, Publisher
from producers.ratelimit import TokenBucket, unlimited
from schemas.topics import get_topic


class RecordingPublisher(Publisher):
    """A Publisher whose sends succeed at once, without Kafka."""

    def __init__(self) -> None:
        super().__init__("unused:9092", source="test")
        self.sent: list[OutgoingRecord] = []

    async def enqueue(self, record: OutgoingRecord) -> asyncio.Future[Any]:
        self.sent.append(record)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


LINES = "\n".join([
    json.dumps({"id": "a1", "text": "one", "version": 1}),
    "{not json",
    "",
    json.dumps({"id": "a3", "text": "three", "version": 0, "extra": 1}),
    json.dumps({"id": "a4", "text": "four", "version": 1, "metadata": {"k": "v"}}),
    json.dumps(["a", "list"]),
]) + "\n"


async def test_rejects_carry_line_numbers_reasons_and_raw_lines(tmp_path: Path) -> None:
    publisher = RecordingPublisher()
    path = tmp_path / "in.jsonl.rejects.jsonl"
    path.write_text("stale\n")
    progress: list[int] = []
    with RejectsFile(path) as rejects:
        result = await publish_items(
            publisher, get_topic("content-upserted"), read_json_lines(io.StringIO(LINES)), rejects,
            limit=unlimited, on_progress=progress.append,
        )
    assert (result.sent, result.rejected) == (2, 3)
    assert sum(progress) == 5
    assert [r.key for r in publisher.sent] == ["a1", "a4"]
    assert all(json.loads(r.value or b"")["source"] == "test" for r in publisher.sent)
    rejects_read = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["line"] for r in rejects_read] == [2, 4, 6]
    assert "invalid JSON" in rejects_read[0]["reason"]
    assert {e["loc"] for e in rejects_read[1]["errors"]} == {"version", "extra"}
    assert rejects_read[1]["raw"] == LINES.splitlines()[3]


async def test_no_rejects_file_when_everything_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    with RejectsFile(path) as rejects:
        line = '{"type": "click", "session_id": "s", "content_id": "c", "rank": 1}\n'
        await publish_items(
            RecordingPublisher(), get_topic("clicks"), read_json_lines(io.StringIO(line)), rejects,
            limit=unlimited,
        )
    assert not path.exists()


async def test_publish_many_sends_nothing_when_any_event_is_invalid() -> None:
    publisher = RecordingPublisher()
    with pytest.raises(BatchValidationError, match="event 1: invalid clicks event") as caught:
        await publisher.publish_many("clicks", [
            {"type": "click", "session_id": "s", "content_id": "c", "rank": 1},
            {"type": "click", "session_id": "s", "content_id": "c", "rank": 0},
        ])
    assert list(caught.value.errors) == [1] and publisher.sent == []


def test_a_model_goes_only_to_its_topic() -> None:
    from schemas.clicks import ClickEvent

    with pytest.raises(ValueError, match="cannot go to content-upserted"):
        RecordingPublisher().prepare("content-upserted", ClickEvent(session_id="s", content_id="c", rank=1))
    record = RecordingPublisher().prepare("clicks", ClickEvent(session_id="s", content_id="c", rank=1))
    assert record.key == "s" and json.loads(record.value or b"")["source"] == "test"


def test_tombstones_only_on_compacted_content() -> None:
    assert RecordingPublisher().tombstone("content-upserted", "acme/a1").value is None
    with pytest.raises(ValueError, match="does not accept tombstones"):
        RecordingPublisher().tombstone("clicks", "s")


def test_unavailable_compression_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not available"):
        Publisher("x:1", compression="brotli")


async def test_token_bucket_paces_events() -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(10.0, burst=1.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        await bucket.acquire()
    assert now[0] == pytest.approx(0.4)  # first is free (burst), then one every 0.1s


# --- corpus loaders -------------------------------------------------------------------------
def test_beir_directory(tmp_path: Path) -> None:
    (tmp_path / "corpus.jsonl").write_text(
        json.dumps({"_id": "d1", "title": "T", "text": "x", "metadata": {"url": "u"}}) + "\n"
        + json.dumps({"_id": "d2", "title": "T2", "text": ""}) + "\n"
    )
    items = list(read_corpus(tmp_path, tenant="acme", version=3))
    assert items[0].data == {"id": "d1", "title": "T", "text": "x", "metadata": {"url": "u"}, "version": 3,
                             "tenant": "acme"}
    assert items[1].line == 2 and isinstance(items[1].data, SourceError)
    assert "'text'" in items[1].data.reason


def test_generic_json_lines_with_mapping_and_limit(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"doc": f"n{i}", "body": "b", "lang": "en"}) + "\n" for i in range(5)))
    items = list(read_corpus(path, CorpusFormat.AUTO, FieldMap(id="doc", text="body"), limit=2))
    assert [i.data["id"] for i in items] == ["n0", "n1"]
    assert items[0].data["metadata"] == {"lang": "en"} and items[0].data["title"] == ""


def test_csv_with_column_mapping(tmp_path: Path) -> None:
    path = tmp_path / "docs.csv"
    path.write_text('sku,name,description,brand\n1,Chair,"A chair, wooden",ikea\n2,Desk,,\n')
    items = list(read_corpus(path, fields=FieldMap(id="sku", title="name", text="description")))
    assert items[0].data == {"id": "1", "title": "Chair", "text": "A chair, wooden",
                             "metadata": {"brand": "ikea"}, "version": 1, "tenant": "default"}
    assert items[1].line == 3 and isinstance(items[1].data, SourceError)
