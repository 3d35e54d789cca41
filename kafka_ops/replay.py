"""`flywheel replay`: move a consumer group back in time, or copy a time slice to another topic.

The planning is pure (kafka_ops.replay_plan); this module only talks to Kafka.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from core.adapters.kafka_admin import KafkaAdminError, KafkaView, connect_kafka
from core.kafka_auth import kafka_client_options
from kafka_ops.replay_plan import (
    CopyState,
    PartitionReset,
    load_state,
    plan_reset,
    plan_slice,
    save_state,
    target_partition,
)
from kafka_ops.timespec import to_ms
from producers.publisher import DEFAULT_COMPRESSION
from producers.ratelimit import limiter

ORIGIN_HEADER = "flywheel-replay-origin"


class ReplayError(KafkaAdminError):
    """A replay cannot be done as asked; the message says why."""


class GroupActiveError(ReplayError):
    """The group has members: moving its offsets now would race with them."""


# --- (a) move a group's offsets ------------------------------------------------------------
async def active_members(admin: AIOKafkaAdminClient, group: str) -> list[str]:
    """``client_id@host`` of every member of the group (empty when nobody is in it)."""
    members = []
    for response in await admin.describe_consumer_groups([group]):
        for described in response.groups:
            error_code, _group, _state, _protocol_type, _protocol, group_members = described[:6]
            if error_code:
                raise ReplayError(f"cannot describe group {group!r}: Kafka error code {error_code}")
            members += [f"{m[1]}@{m[2].lstrip('/')}" for m in group_members]
    return members


async def group_members(bootstrap: str, group: str) -> list[str]:
    """The group's live members (client id @ host); empty when none is connected."""
    async with connect_kafka(bootstrap) as kafka:
        return await active_members(kafka.admin, group)


async def reset_group(
    bootstrap: str, topic: str, group: str, since: datetime, until: datetime | None = None,
    *, dry_run: bool = False,
) -> list[PartitionReset]:
    """Move ``group`` on ``topic`` to the first offset at or after ``since`` on every partition."""
    async with connect_kafka(bootstrap) as kafka:
        partitions = await kafka.partitions(topic)
        members = await active_members(kafka.admin, group)
        if members and not dry_run:
            raise GroupActiveError(
                f"group {group!r} has {len(members)} active member(s) ({', '.join(sorted(members))}); "
                "stop its consumers, then replay (use --dry-run to preview)"
            )
        tps = [TopicPartition(topic, p) for p in partitions]
        committed_raw = await kafka.admin.list_consumer_group_offsets(group, partitions=tps)
        committed = {
            tp.partition: (meta.offset if meta.offset >= 0 else None) for tp, meta in committed_raw.items()
        }
        at_from = await kafka.offsets_at(topic, partitions, to_ms(since))
        at_to = await kafka.offsets_at(topic, partitions, to_ms(until)) if until is not None else None
        end = await kafka.end_offsets(topic, partitions)
        plan = plan_reset(partitions, committed, at_from, end, at_to)
        if not dry_run:
            await _commit(bootstrap, group, topic, plan)
        return plan


async def _commit(bootstrap: str, group: str, topic: str, plan: list[PartitionReset]) -> None:
    committer = AIOKafkaConsumer(**kafka_client_options(), bootstrap_servers=bootstrap, group_id=group,
                                 enable_auto_commit=False)
    offsets = {TopicPartition(topic, row.partition): row.new for row in plan}
    committer.assign(list(offsets))
    await committer.start()
    try:
        await committer.commit(offsets)
    except KafkaError as error:
        # The broker refuses commits from outside the group once members have joined.
        raise GroupActiveError(f"Kafka refused the new offsets for group {group!r}: {error!r}") from error
    finally:
        await committer.stop()


# --- (b) copy a slice into another topic ---------------------------------------------------
class CopyOutcome(Enum):
    STARTED = "started"
    RESUMED = "resumed"
    ALREADY_COMPLETE = "already complete"


@dataclass(frozen=True)
class CopyRequest:
    topic: str
    into: str
    since: datetime
    until: datetime
    keep_timestamps: bool = False
    max_rate: float | None = None
    batch_size: int = 500


async def copy_slice(
    bootstrap: str,
    state_path: Path,
    request: CopyRequest,
    *,
    restart: bool = False,
    on_start: Callable[[CopyState, CopyOutcome], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    before_checkpoint: Callable[[CopyState], None] | None = None,
) -> tuple[CopyState, CopyOutcome]:
    """Copy [since, until) of ``topic`` into ``request.into``, resuming from ``state_path``.

    Progress is written only after the batch it records was acked, so a crash re-sends at
    most one batch (at-least-once) and never leaves a gap.
    """
    if request.topic == request.into:
        raise ReplayError("--into must name another topic")
    async with connect_kafka(bootstrap) as kafka:
        source_partitions = await kafka.partitions(request.topic)
        target_count = len(await kafka.partitions(request.into))
        state = None if restart else load_state(state_path)
        if state is not None and (state.topic, state.into) != (request.topic, request.into):
            raise ReplayError(
                f"{state_path} holds a copy of {state.topic} into {state.into}; "
                "pass another --name, or --restart to discard it"
            )
        if state is not None and state.complete:
            if on_start:
                on_start(state, CopyOutcome.ALREADY_COMPLETE)
            return state, CopyOutcome.ALREADY_COMPLETE
        outcome = CopyOutcome.RESUMED if state is not None else CopyOutcome.STARTED
        if state is None:
            from_ms, to_ms_ = to_ms(request.since), to_ms(request.until)
            if from_ms >= to_ms_:
                raise ReplayError("--from must be before --to")
            ranges = plan_slice(
                source_partitions,
                await kafka.offsets_at(request.topic, source_partitions, from_ms),
                await kafka.offsets_at(request.topic, source_partitions, to_ms_),
                await kafka.end_offsets(request.topic, source_partitions),
            )
            state = CopyState(state_path.stem, request.topic, request.into, from_ms, to_ms_, ranges)
            save_state(state_path, state)
        if on_start:
            on_start(state, outcome)
        await _copy(kafka, state, state_path, request, target_count, on_progress, before_checkpoint)
        return state, outcome


async def _send_batch(
    batch: dict[TopicPartition, list[Any]], state: CopyState, writer: AIOKafkaProducer,
    request: CopyRequest, target_count: int, limit: Callable[[], Awaitable[None]],
) -> tuple[list[asyncio.Future[object]], dict[int, int], int]:
    """Send the batch's records inside the slice; their acks, the next offset seen per
    partition, and how many were skipped (outside the time window)."""
    acks: list[asyncio.Future[object]] = []
    seen: dict[int, int] = {}
    skipped = 0
    for tp, records in batch.items():
        stop = state.ranges[tp.partition].stop
        for record in records:
            if record.offset >= stop:
                break
            seen[tp.partition] = record.offset + 1
            if not state.from_ms <= record.timestamp < state.to_ms:
                skipped += 1
                continue
            await limit()
            origin = f"{tp.topic}/{tp.partition}/{record.offset}".encode()
            headers = [*record.headers, (ORIGIN_HEADER, origin)]
            acks.append(await writer.send(
                state.into, record.value, key=record.key, headers=headers,
                partition=target_partition(tp.partition, target_count),
                timestamp_ms=record.timestamp if request.keep_timestamps else None,
            ))
    return acks, seen, skipped


async def _copy(
    kafka: KafkaView,
    state: CopyState,
    state_path: Path,
    request: CopyRequest,
    target_count: int,
    on_progress: Callable[[int], None] | None,
    before_checkpoint: Callable[[CopyState], None] | None,
) -> None:
    remaining = state.remaining()
    if not remaining:
        return
    reader = AIOKafkaConsumer(
        **kafka_client_options(), bootstrap_servers=kafka.bootstrap, enable_auto_commit=False,
        auto_offset_reset="none",
        isolation_level="read_committed", max_poll_records=request.batch_size,
    )
    writer = AIOKafkaProducer(
        **kafka_client_options(), bootstrap_servers=kafka.bootstrap, enable_idempotence=True, acks="all",
        compression_type=DEFAULT_COMPRESSION, linger_ms=5, max_batch_size=256 * 1024,
    )
    tps = {p: TopicPartition(state.topic, p) for p in remaining}
    reader.assign(list(tps.values()))
    await reader.start()
    await writer.start()
    limit = limiter(request.max_rate)
    try:
        for p, tp in tps.items():
            reader.seek(tp, state.next[p])
        active = set(remaining)
        while active:
            batch = await reader.getmany(
                *(tps[p] for p in active), timeout_ms=1000, max_records=request.batch_size
            )
            acks, seen, skipped = await _send_batch(batch, state, writer, request, target_count, limit)
            await asyncio.gather(*acks)  # every send of the batch acked before it is recorded
            for p in list(active):
                position = await reader.position(tps[p])
                done_to = max(seen.get(p, state.next[p]), min(position, state.ranges[p].stop))
                seen[p] = done_to
                if done_to >= state.ranges[p].stop:
                    active.discard(p)
            if not acks and not skipped and seen == {p: state.next[p] for p in seen}:
                continue
            if before_checkpoint:
                before_checkpoint(state)
            state.next.update(seen)
            state.copied += len(acks)
            state.skipped += skipped
            save_state(state_path, state)
            if on_progress:
                on_progress(len(acks) + skipped)
    finally:
        await writer.stop()
        await reader.stop()
