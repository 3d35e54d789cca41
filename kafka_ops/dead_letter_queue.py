"""Dead-letter topics: list, inspect and redrive what consumers could not process.

Letters belong to a tenant: the `tenant` of the event they hold or, for a tombstone or a
value that is not an event, the tenant prefix of a `content-upserted` key (`<tenant>/<id>`; a
key without one is the default tenant's). A letter whose tenant cannot be told (a malformed
click) is the operator's alone. A tenant's redrive sends only its own letters and keeps its
own offsets (group `flywheel-dlq-redrive.<topic>.tenant.<tenant>`); a letter counts as redriven
once the operator's group or its tenant's group has passed it, so neither sends it again.

A redrive republishes each letter, byte for byte, to its original topic with its key and its
original headers (the `dlq-*` ones dropped), then commits the redrive group's offset on the
dead-letter topic, so a redrive interrupted midway resumes and never sends a letter twice
on purpose (at-least-once: the letter being sent at a crash may go again, and consumers are
idempotent).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from core.adapters.kafka_admin import connect_kafka
from core.kafka_auth import kafka_client_options
from schemas.envelope import DEFAULT_TENANT
from schemas.topics import CONTENT_UPSERTED, TOPICS

CONTENT_TOPIC = CONTENT_UPSERTED.name

DLQ_HEADER_PREFIX = "dlq-"


def redrive_group(dlq_topic: str, tenant: str | None = None) -> str:
    """The consumer group whose offsets mark the letters redriven (by the operator, or by a tenant)."""
    base = f"flywheel-dlq-redrive.{dlq_topic}"
    return base if tenant is None else f"{base}.tenant.{tenant}"


@dataclass(frozen=True)
class Letter:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    value: bytes | None
    headers: dict[str, str]

    @property
    def error(self) -> str:
        return self.headers.get("dlq-error", "")

    @property
    def original(self) -> str:
        h = self.headers
        return f"{h.get('dlq-original-topic', '?')}/{h.get('dlq-original-partition', '?')}@" \
               f"{h.get('dlq-original-offset', '?')}"

    @property
    def tenant(self) -> str | None:
        """The tenant the letter belongs to; None when it cannot be told (operators only)."""
        if self.value is not None:
            try:
                event = json.loads(self.value)
            except ValueError:
                event = None
            if isinstance(event, dict) and isinstance(event.get("tenant"), str):
                return str(event["tenant"])
        original = self.headers.get("dlq-original-topic") or self.topic.removesuffix(".dlq")
        if original == CONTENT_TOPIC and self.key:
            prefix, slash, _ = self.key.partition("/")
            return prefix if slash else DEFAULT_TENANT
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic, "partition": self.partition, "offset": self.offset,
            "timestamp_ms": self.timestamp_ms, "key": self.key, "headers": self.headers,
            "value": self.value.decode("utf-8", "replace") if self.value is not None else None,
        }


@dataclass
class TopicSummary:
    topic: str
    total: int
    pending: int  # not yet redriven by the redrive group
    partitions: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # start, end, committed


def dlq_topics(only: str | None = None) -> list[str]:
    names = [spec.dlq for spec in TOPICS.values()]
    if only is None:
        return names
    wanted = only if only.endswith(".dlq") else f"{only}.dlq"
    if wanted not in names:
        raise ValueError(f"unknown topic {only!r}; dead-letter topics: {', '.join(names)}")
    return [wanted]


def _consumer(bootstrap: str, group: str | None = None) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        **kafka_client_options(), bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", request_timeout_ms=15000,
    )


async def _partitions(bootstrap: str, topic: str) -> list[TopicPartition]:
    async with connect_kafka(bootstrap) as kafka:
        return [TopicPartition(topic, p) for p in await kafka.partitions(topic)]


async def summarize(bootstrap: str, topics: list[str]) -> list[TopicSummary]:
    summaries = []
    for topic in topics:
        consumer = _consumer(bootstrap, redrive_group(topic))
        await consumer.start()
        try:
            partitions = await _partitions(bootstrap, topic)
            starts = await consumer.beginning_offsets(partitions)
            ends = await consumer.end_offsets(partitions)
            summary = TopicSummary(topic, 0, 0)
            for tp in partitions:
                committed = await consumer.committed(tp) or 0
                start, end = starts[tp], ends[tp]
                summary.partitions[tp.partition] = (start, end, committed)
                summary.total += end - start
                summary.pending += end - max(start, committed)
            summaries.append(summary)
        finally:
            await consumer.stop()
    return summaries


def _letter(record: Any) -> Letter:
    return Letter(
        topic=record.topic, partition=record.partition, offset=record.offset,
        timestamp_ms=record.timestamp, key=record.key.decode("utf-8", "replace") if record.key else None,
        value=record.value, headers={k: v.decode("utf-8", "replace") for k, v in record.headers or ()},
    )


async def read_letters(
    bootstrap: str, topic: str, limit: int = 20, partition: int | None = None, offset: int | None = None
) -> list[Letter]:
    """Up to `limit` letters from the start (or from `offset` of `partition`)."""
    consumer = _consumer(bootstrap)
    await consumer.start()
    try:
        partitions = [tp for tp in await _partitions(bootstrap, topic)
                      if partition is None or tp.partition == partition]
        if not partitions:
            return []
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            if offset is not None:
                consumer.seek(tp, offset)
            else:
                await consumer.seek_to_beginning(tp)
        letters: list[Letter] = []
        remaining = {tp for tp in partitions if await consumer.position(tp) < ends[tp]}
        while remaining and len(letters) < limit:
            batch = await consumer.getmany(*remaining, timeout_ms=1000, max_records=limit)
            for tp, records in batch.items():
                letters += [_letter(r) for r in records]
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
            if not batch:
                break
        return sorted(letters, key=lambda letter: (letter.partition, letter.offset))[:limit]
    finally:
        await consumer.stop()


async def _committed(
    bootstrap: str, group: str, partitions: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """The group's committed offset per partition (0 where it has none)."""
    view = _consumer(bootstrap, group)
    await view.start()
    try:
        return {tp: await view.committed(tp) or 0 for tp in partitions}
    finally:
        await view.stop()


async def tenant_letters(
    bootstrap: str, topic: str, tenant: str, scan: int = 10_000
) -> tuple[list[Letter], list[Letter]]:
    """A tenant's letters on `topic` (of the first `scan`), and those of them not yet redriven."""
    partitions = await _partitions(bootstrap, topic)
    operator = await _committed(bootstrap, redrive_group(topic), partitions)
    own = await _committed(bootstrap, redrive_group(topic, tenant), partitions)
    mine = [letter for letter in await read_letters(bootstrap, topic, scan) if letter.tenant == tenant]
    pending = [letter for letter in mine
               if letter.offset >= max(operator[TopicPartition(topic, letter.partition)],
                                       own[TopicPartition(topic, letter.partition)])]
    return mine, pending


@dataclass
class _Redrive:
    """One redrive pass: which letters count, and republishing them."""

    bootstrap: str
    dlq_topic: str
    tenant: str | None
    consumer: AIOKafkaConsumer
    producer: AIOKafkaProducer | None
    partitions: list[TopicPartition]
    limit: int | None
    on_letter: Callable[[Letter], None] | None
    sent: int = 0
    # Per tenant: where its own redrives got to (letters before it were redriven by it).
    tenant_marks: dict[str, dict[TopicPartition, int]] = field(default_factory=dict)

    @property
    def full(self) -> bool:
        return self.limit is not None and self.sent >= self.limit

    async def redriven_by_its_tenant(self, letter: Letter, tp: TopicPartition) -> bool:
        if self.tenant is not None or letter.tenant is None:
            return False
        if letter.tenant not in self.tenant_marks:
            self.tenant_marks[letter.tenant] = await _committed(
                self.bootstrap, redrive_group(self.dlq_topic, letter.tenant), self.partitions)
        return letter.offset < self.tenant_marks[letter.tenant][tp]

    async def handle(self, record: Any, tp: TopicPartition) -> None:
        letter = _letter(record)
        ours = (self.tenant is None or letter.tenant == self.tenant) \
            and not await self.redriven_by_its_tenant(letter, tp)
        if self.producer is not None:
            if ours:
                await self.producer.send_and_wait(
                    letter.headers.get("dlq-original-topic") or self.dlq_topic.removesuffix(".dlq"),
                    record.value, key=record.key,
                    headers=[(k, v) for k, v in record.headers or () if not k.startswith(DLQ_HEADER_PREFIX)],
                )
            await self.consumer.commit({tp: OffsetAndMetadata(record.offset + 1, "")})
        if ours:
            self.sent += 1
            if self.on_letter is not None:
                self.on_letter(letter)


async def _seek_to_start(
    consumer: AIOKafkaConsumer, bootstrap: str, dlq_topic: str, group: str, tenant: str | None,
    partitions: list[TopicPartition],
) -> None:
    start = await _committed(bootstrap, group, partitions)
    if tenant is not None:  # what the operator redrove is done for the tenant too
        operator = await _committed(bootstrap, redrive_group(dlq_topic), partitions)
        start = {tp: max(offset, operator[tp]) for tp, offset in start.items()}
    for tp in partitions:
        if start[tp]:
            consumer.seek(tp, start[tp])
        else:
            await consumer.seek_to_beginning(tp)


async def redrive(
    bootstrap: str,
    dlq_topic: str,
    *,
    dry_run: bool = False,
    limit: int | None = None,
    on_letter: Callable[[Letter], None] | None = None,
    tenant: str | None = None,
) -> int:
    """Republish pending letters of `dlq_topic` to their original topics; returns how many.
    With `tenant`, only that tenant's letters, tracked by the tenant's own redrive group."""
    group = redrive_group(dlq_topic, tenant)
    consumer = _consumer(bootstrap, None if dry_run else group)
    producer = None if dry_run else AIOKafkaProducer(
        **kafka_client_options(), bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await consumer.start()
    if producer is not None:
        await producer.start()
    try:
        partitions = await _partitions(bootstrap, dlq_topic)
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await _seek_to_start(consumer, bootstrap, dlq_topic, group, tenant, partitions)
        run = _Redrive(bootstrap, dlq_topic, tenant, consumer, producer, partitions, limit, on_letter)
        remaining = {tp for tp in partitions if await consumer.position(tp) < ends[tp]}
        while remaining and not run.full:
            batch = await consumer.getmany(*remaining, timeout_ms=1000, max_records=100)
            if not batch:
                break
            for tp, records in batch.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        remaining.discard(tp)
                    if run.full or record.offset >= ends[tp]:
                        break
                    await run.handle(record, tp)
                    if record.offset + 1 >= ends[tp]:
                        remaining.discard(tp)
        return run.sent
    finally:
        await consumer.stop()
        if producer is not None:
            await producer.stop()
