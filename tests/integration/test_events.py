"""Event contracts against the real broker: SDK round trips, `flywheel publish` / `load`, kcat."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from opentelemetry.sdk.trace import TracerProvider
from typer.testing import CliRunner

from cli.main import app
from core.config import Settings
from core.kafka_auth import kafka_client_options
from infra.process import Component
from producers.publisher import Publisher
from producers.sync import SyncPublisher
from schemas.codec import decode_record, parse_content_key
from schemas.content import ContentUpserted
from schemas.examples import EXAMPLES
from tests.integration.kafka_helpers import end_offsets, kcat_credentials, kcat_environment, read_from

pytestmark = pytest.mark.integration


async def _read_at(bootstrap: str, topic: str, partition: int, offset: int):  # type: ignore[no-untyped-def]
    consumer = AIOKafkaConsumer(**kafka_client_options(), bootstrap_servers=bootstrap,
                                enable_auto_commit=False)
    tp = TopicPartition(topic, partition)
    consumer.assign([tp])
    await consumer.start()
    try:
        consumer.seek(tp, offset)
        return await consumer.getone()
    finally:
        await consumer.stop()


async def test_every_event_type_round_trips(kafka: Component, test_settings: Settings) -> None:
    bootstrap = test_settings.bootstrap_servers
    tag = uuid.uuid4().hex[:8]
    async with Publisher(bootstrap, source="round-trip", tracer_provider=TracerProvider()) as publisher:
        for topic, examples in EXAMPLES.items():
            events = [_tagged(topic, example, tag) for example in examples]
            deliveries = await publisher.publish_many(topic, events)
            for example, delivery in zip(events, deliveries, strict=True):
                record = await _read_at(bootstrap, topic, delivery.partition, delivery.offset)
                event = decode_record(record)
                assert event is not None and event.event_id == delivery.event_id
                assert event.source == "round-trip" and event.schema_version == "1.0"
                dumped = event.model_dump(mode="json")
                assert {k: dumped[k] for k in example} == json.loads(json.dumps(example))
                headers = dict(record.headers)
                assert headers["content-type"] == b"application/json"
                assert headers["traceparent"].startswith(b"00-")  # W3C trace context
                assert record.key.decode() == delivery.key
        deleted = await publisher.delete_content(f"doc-{tag}", tenant="acme")
    tombstone = await _read_at(bootstrap, "content-upserted", deleted.partition, deleted.offset)
    assert tombstone.value is None and decode_record(tombstone) is None
    assert parse_content_key(tombstone.key) == ("acme", f"doc-{tag}")


def _tagged(topic: str, example: dict[str, object], tag: str) -> dict[str, object]:
    key_field = {"content-upserted": "id", "clicks": "session_id", "training-requested": "run_id"}.get(
        topic, "model_version"
    )
    return {**example, key_field: f"{example[key_field]}-{tag}"}


def test_sync_publisher(kafka: Component, test_settings: Settings) -> None:
    with SyncPublisher(test_settings.bootstrap_servers, source="script") as publisher:
        delivery = publisher.publish("clicks", {"type": "click", "session_id": "s-sync", "content_id": "c",
                                                "rank": 1})
        again = publisher.publish("clicks", {"type": "click", "session_id": "s-sync", "content_id": "c",
                                             "rank": 2})
    assert delivery.key == "s-sync" and again.partition == delivery.partition
    assert again.offset > delivery.offset


def test_publish_command_reports_rejects_and_delivers_every_valid_line(
    kafka: Component, test_settings: Settings, tmp_path: Path
) -> None:
    import asyncio

    session = f"s-{uuid.uuid4().hex[:8]}"
    lines: list[dict[str, object] | str] = [
        {"type": "search", "session_id": session, "query": "q", "model_version": "m", "results": []},
        {"type": "click", "session_id": session, "content_id": "c1", "rank": 0},  # bad rank
        {"type": "click", "session_id": session, "content_id": "c1", "rank": 1},
        "not json",
        {"type": "conversion", "session_id": session, "content_id": "c1"},
        {"type": "click", "session_id": session},  # missing content_id and rank
    ]
    source = tmp_path / "events.jsonl"
    source.write_text("".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines))
    before = asyncio.run(end_offsets(test_settings.bootstrap_servers, "clicks"))

    result = CliRunner().invoke(app, ["publish", "clicks", str(source), "--no-progress",
                                      "--bootstrap", test_settings.bootstrap_servers])

    assert result.exit_code == 1, result.output
    assert "sent 3, rejected 3" in result.output
    rejects_file = tmp_path / "events.jsonl.rejects.jsonl"
    rejects = [json.loads(line) for line in rejects_file.read_text().splitlines()]
    assert [r["line"] for r in rejects] == [2, 4, 6]
    assert {e["loc"] for e in rejects[2]["errors"]} == {"content_id", "rank"}
    records = asyncio.run(read_from(test_settings.bootstrap_servers, "clicks", before))
    mine = [decode_record(r) for r in records if r.key == session.encode()]
    assert [e.type for e in mine if e is not None] == ["search", "click", "conversion"]

    allowed = CliRunner().invoke(app, ["publish", "clicks", str(source), "--no-progress", "--allow-rejects",
                                       "--bootstrap", test_settings.bootstrap_servers])
    assert allowed.exit_code == 0, allowed.output


def test_load_command_publishes_a_beir_corpus(
    kafka: Component, test_settings: Settings, tmp_path: Path
) -> None:
    import asyncio

    tenant = f"t-{uuid.uuid4().hex[:8]}"
    (tmp_path / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": f"d{i}", "title": f"T{i}", "text": f"text {i}"}) + "\n" for i in range(20)
    ))
    before = asyncio.run(end_offsets(test_settings.bootstrap_servers, "content-upserted"))
    result = CliRunner().invoke(app, ["load", str(tmp_path), "--tenant", tenant, "--limit", "15",
                                      "--max-rate", "2000", "--no-progress",
                                      "--bootstrap", test_settings.bootstrap_servers])
    assert result.exit_code == 0, result.output
    records = asyncio.run(read_from(test_settings.bootstrap_servers, "content-upserted", before))
    mine = [r for r in records if r.key.startswith(f"{tenant}/".encode())]
    events = [decode_record(r) for r in mine]
    loaded = sorted(e.id for e in events if isinstance(e, ContentUpserted))
    assert loaded == sorted(f"d{i}" for i in range(15))


def test_event_published_with_kcat_is_consumed_and_validated(
    kafka: Component, test_settings: Settings
) -> None:
    import asyncio

    kcat = shutil.which("kcat")
    if kcat is None:
        pytest.skip("kcat is not installed (Debian: apt-get install kcat; `make system-deps`)")
    item = f"kcat-{uuid.uuid4().hex[:8]}"
    before = asyncio.run(end_offsets(test_settings.bootstrap_servers, "content-upserted"))
    value = json.dumps({"id": item, "title": "From kcat", "text": "published by a non-Python client",
                        "version": 1, "metadata": {"via": "kcat"}})
    subprocess.run(
        [kcat, "-P", "-b", test_settings.bootstrap_servers, *kcat_credentials(test_settings),
         "-t", "content-upserted", "-k", item,
         "-H", "traceparent=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"],
        input=value.encode(), check=True, timeout=30, capture_output=True,
        env=kcat_environment(test_settings),
    )
    records = asyncio.run(read_from(test_settings.bootstrap_servers, "content-upserted", before))
    [record] = [r for r in records if r.key == item.encode()]
    event = decode_record(record)
    assert isinstance(event, ContentUpserted)
    assert (event.id, event.version, event.metadata, event.tenant) == (item, 1, {"via": "kcat"}, "default")
    redelivered = decode_record(record)
    assert redelivered is not None and event.event_id == redelivered.event_id  # stable idempotency key


def test_the_documented_kcat_delete_sends_a_tombstone_to_the_sdks_partition(
    kafka: Component, test_settings: Settings
) -> None:
    """docs/events.md's recipe: `echo 'id:' | kcat -P -X partitioner=murmur2_random -K: -Z` is a
    null value for the key, on the partition the SDK put the item's upsert on."""
    import asyncio

    kcat = shutil.which("kcat")
    assert kcat is not None, "kcat is missing: `make test` installs it (make system-deps)"
    partitions: dict[str, int] = {}
    with SyncPublisher(test_settings.bootstrap_servers, source="tests") as publisher:
        for n in range(8):  # several keys, so a partitioner mismatch cannot pass by luck
            item = f"kcat-del-{uuid.uuid4().hex[:8]}-{n}"
            delivery = publisher.publish("content-upserted", {"id": item, "text": "to delete", "version": 1})
            partitions[item] = delivery.partition
    before = asyncio.run(end_offsets(test_settings.bootstrap_servers, "content-upserted"))
    lines = "".join(f"{item}:\n" for item in partitions)
    subprocess.run(
        [kcat, "-P", "-b", test_settings.bootstrap_servers, *kcat_credentials(test_settings),
         "-X", "partitioner=murmur2_random",
         "-t", "content-upserted", "-K:", "-Z"],
        input=lines.encode(), check=True, timeout=30, capture_output=True,
        env=kcat_environment(test_settings),
    )
    records = asyncio.run(read_from(test_settings.bootstrap_servers, "content-upserted", before))
    tombstones = {r.key.decode(): r for r in records if r.key and r.key.decode() in partitions}
    assert set(tombstones) == set(partitions)
    assert all(r.value is None for r in tombstones.values())
    assert {key: r.partition for key, r in tombstones.items()} == partitions
