"""`flywheel replay` against the real broker: group resets by time, resumable slice copies."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from typer.testing import CliRunner

from cli.main import app
from core.config import Settings, get_settings
from core.kafka_auth import kafka_client_options
from infra.process import Component
from kafka_ops.replay import (
    ORIGIN_HEADER,
    CopyOutcome,
    CopyRequest,
    GroupActiveError,
    copy_slice,
    reset_group,
)
from kafka_ops.replay_plan import CopyState
from kafka_ops.timespec import to_ms
from tests.integration.kafka_helpers import create_topic, read_from, unique

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
OLD, NEW = NOW - timedelta(hours=2), NOW - timedelta(minutes=10)


async def _produce(bootstrap: str, topic: str, rows: list[tuple[int, datetime, str]]) -> None:
    """(partition, timestamp, key) rows, in order; each value names its row."""
    producer = AIOKafkaProducer(**kafka_client_options(), bootstrap_servers=bootstrap, acks="all",
                                enable_idempotence=True)
    await producer.start()
    try:
        for i, (partition, at, key) in enumerate(rows):
            await producer.send_and_wait(
                topic, f"v{i}".encode(), key=key.encode(), partition=partition, timestamp_ms=to_ms(at),
                headers=[("row", str(i).encode())],
            )
    finally:
        await producer.stop()


async def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(**kafka_client_options(), bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        await consumer.stop()


async def _commit(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = AIOKafkaConsumer(**kafka_client_options(), bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    tps = {TopicPartition(topic, p): offset for p, offset in offsets.items()}
    consumer.assign(list(tps))
    await consumer.start()
    try:
        await consumer.commit(tps)
    finally:
        await consumer.stop()


async def test_group_reset_by_time_moves_quiet_partitions_to_their_end(
    kafka: Component, test_settings: Settings
) -> None:
    bootstrap = test_settings.bootstrap_servers
    topic, group = await create_topic(bootstrap, 3, "replay"), unique("group")
    # Every partition has 3 old events; only partition 0 has events after --from.
    rows = [(p, OLD, f"k{p}") for p in range(3) for _ in range(3)] + [(0, NEW, "k0")] * 2
    await _produce(bootstrap, topic, rows)
    await _commit(bootstrap, group, topic, {0: 5, 1: 3})  # partition 2: never committed

    since = NOW - timedelta(hours=1)
    preview = await reset_group(bootstrap, topic, group, since, dry_run=True)
    assert [(r.partition, r.current, r.new, r.again) for r in preview] == [
        (0, 5, 3, 2), (1, 3, 3, 0), (2, None, 3, 0),
    ]
    assert await _committed(bootstrap, group, topic, 3) == {0: 5, 1: 3, 2: None}  # dry run changed nothing

    await reset_group(bootstrap, topic, group, since)
    assert await _committed(bootstrap, group, topic, 3) == {0: 3, 1: 3, 2: 3}  # never back to 0

    result = await asyncio.to_thread(CliRunner().invoke, app, [
        "replay", "--topic", topic, "--group", group, "--from", "-3h", "--dry-run", "--bootstrap", bootstrap,
    ])
    assert result.exit_code == 0, result.output
    assert "would consume 9 event(s) again" in result.output and "dry run" in result.output


async def test_replay_refuses_a_group_with_active_members(kafka: Component, test_settings: Settings) -> None:
    bootstrap = test_settings.bootstrap_servers
    topic, group = await create_topic(bootstrap, 1, "replay"), unique("group")
    member = AIOKafkaConsumer(topic, **kafka_client_options(), bootstrap_servers=bootstrap, group_id=group,
                              client_id="busy-member")
    await member.start()
    try:
        deadline = time.monotonic() + 20
        while not member.assignment() and time.monotonic() < deadline:
            await member.getmany(timeout_ms=200)
        assert member.assignment()
        with pytest.raises(GroupActiveError, match="busy-member"):
            await reset_group(bootstrap, topic, group, NOW - timedelta(hours=1))
        # A dry run shows the plan, and warns that the real run would be refused.
        dry = await asyncio.to_thread(CliRunner().invoke, app, [
            "replay", "--topic", topic, "--group", group, "--from", "-1h", "--dry-run",
            "--bootstrap", bootstrap, "--json"])
        assert dry.exit_code == 0, dry.output
        assert "1 live member(s)" in dry.output and "busy-member" in dry.output
    finally:
        await member.stop()


class Crash(RuntimeError):
    pass


@pytest.fixture
def state_dir(test_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The CLI reads its settings from FLYWHEEL_* variables: point it at the test state."""
    monkeypatch.setenv("FLYWHEEL_STATE_DIR", str(test_settings.state_dir))
    get_settings.cache_clear()
    yield test_settings.state_dir
    get_settings.cache_clear()


async def test_copy_killed_midway_and_resumed_delivers_the_slice_exactly(
    kafka: Component, test_settings: Settings, state_dir: Path
) -> None:
    bootstrap = test_settings.bootstrap_servers
    source = await create_topic(bootstrap, 3, "copy-src")
    target = await create_topic(bootstrap, 3, "copy-dst")
    before, inside, after = NOW - timedelta(hours=3), NOW - timedelta(hours=2), NOW - timedelta(minutes=20)
    rows = [(p, before, f"key-{p}-{i}") for p in range(3) for i in range(2)]
    rows += [(p, inside, f"key-{p}-{i}") for p in (0, 1) for i in range(7)]  # partition 2: nothing inside
    rows += [(p, after, f"key-{p}-late") for p in range(3)]
    await _produce(bootstrap, source, rows)
    window = (NOW - timedelta(minutes=150), NOW - timedelta(hours=1))
    state_path = state_dir / "replay" / f"{source}--{target}.json"
    checkpoints: list[int] = []

    def crash_on_third_batch(state: CopyState) -> None:
        checkpoints.append(state.copied)
        if len(checkpoints) == 3:  # the batch was sent and acked, but is not recorded yet
            raise Crash()

    request = CopyRequest(source, target, *window, batch_size=2)
    with pytest.raises(Crash):
        await copy_slice(bootstrap, state_path, request, before_checkpoint=crash_on_third_batch)
    saved = CopyState.from_json(state_path.read_text())
    assert not saved.complete and saved.copied == 4

    # Resume with the CLI, as an operator would (the saved slice wins over the new times).
    result = await asyncio.to_thread(CliRunner().invoke, app, [
        "replay", "--topic", source, "--from", "-150m", "--to", "-1h", "--into", target, "--no-progress",
        "--bootstrap", bootstrap,
    ])
    assert result.exit_code == 0, result.output
    assert "resumed" in result.output

    copied = await read_from(bootstrap, target)
    originals = {(r.partition, r.offset): r for r in await read_from(bootstrap, source)}
    expected = {k for k, r in originals.items() if to_ms(window[0]) <= r.timestamp < to_ms(window[1])}
    assert len(expected) == 14
    origins = [_origin(r) for r in copied]
    assert set(origins) == expected  # every event of the slice, none outside it
    assert len(origins) - len(expected) <= 2  # at most the one unrecorded batch again
    by_partition: dict[int, list[int]] = defaultdict(list)
    for record, (partition, offset) in zip(copied, origins, strict=True):
        assert record.partition == partition  # same partition number
        original = originals[(partition, offset)]
        assert (record.key, record.value) == (original.key, original.value)
        assert dict(record.headers)["row"] == dict(original.headers)["row"]
        if offset not in by_partition[partition]:
            by_partition[partition].append(offset)
    assert all(offsets == sorted(offsets) for offsets in by_partition.values())  # order kept

    state, outcome = await copy_slice(bootstrap, state_path, request)
    assert outcome is CopyOutcome.ALREADY_COMPLETE and state.copied >= 14


def _origin(record: object) -> tuple[int, int]:
    headers = dict(record.headers)  # type: ignore[attr-defined]
    _, partition, offset = headers[ORIGIN_HEADER].decode().rsplit("/", 2)
    return int(partition), int(offset)
