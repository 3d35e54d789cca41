"""Dead-letter topics: list, inspect and redrive what consumers could not process.

A redrive republishes each letter, byte for byte, to its original topic with its key and its
original headers (the `dlq-*` ones dropped), then commits the redrive group's offset on the
dead-letter topic, so a redrive interrupted midway resumes and never sends a letter twice
on purpose (at-least-once: the letter being sent at a crash may go again, and consumers are
idempotent).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from core.adapters.kafka_admin import connect_kafka
from schemas.topics import TOPICS

DLQ_HEADER_PREFIX = "dlq-"


def redrive_group(dlq_topic: str) -> str:
    return f"flywheel-dlq-redrive.{dlq_topic}"


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
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
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


async def redrive(
    bootstrap: str,
    dlq_topic: str,
    *,
    dry_run: bool = False,
    limit: int | None = None,
    on_letter: Callable[[Letter], None] | None = None,
) -> int:
    """Republish pending letters of `dlq_topic` to their original topics; returns how many."""
    group = redrive_group(dlq_topic)
    consumer = _consumer(bootstrap, None if dry_run else group)
    producer = None if dry_run else AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await consumer.start()
    if producer is not None:
        await producer.start()
    sent = 0
    try:
        partitions = await _partitions(bootstrap, dlq_topic)
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        admin_view = _consumer(bootstrap, group)
        await admin_view.start()
        try:
            committed = {tp: await admin_view.committed(tp) for tp in partitions}
        finally:
            await admin_view.stop()
        for tp in partitions:
            if committed[tp] is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed[tp])  # type: ignore[arg-type]
        remaining = {tp for tp in partitions if await consumer.position(tp) < ends[tp]}
        while remaining and (limit is None or sent < limit):
            batch = await consumer.getmany(*remaining, timeout_ms=1000, max_records=100)
            if not batch:
                break
            for tp, records in batch.items():
                for record in records:
                    if limit is not None and sent >= limit:
                        break
                    if record.offset >= ends[tp]:
                        remaining.discard(tp)
                        break
                    letter = _letter(record)
                    if producer is not None:
                        await producer.send_and_wait(
                            letter.headers.get("dlq-original-topic") or dlq_topic.removesuffix(".dlq"),
                            record.value, key=record.key,
                            headers=[(k, v) for k, v in record.headers or ()
                                     if not k.startswith(DLQ_HEADER_PREFIX)],
                        )
                        await consumer.commit({tp: OffsetAndMetadata(record.offset + 1, "")})
                    sent += 1
                    if on_letter is not None:
                        on_letter(letter)
                    if record.offset + 1 >= ends[tp]:
                        remaining.discard(tp)
        return sent
    finally:
        await consumer.stop()
        if producer is not None:
            await producer.stop()
