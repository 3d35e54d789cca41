"""Replaying a topic with a consumer group of its own: assigned partitions, manual commits.

The partitions are assigned rather than subscribed, so the replay never rebalances; the
group only keeps the committed offsets, which is what makes a backfill resumable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata

from core.kafka_auth import kafka_client_options


class KafkaReplay:
    def __init__(self, consumer: AIOKafkaConsumer, topic: str, partitions: list[int]) -> None:
        self.consumer = consumer
        self.topic = topic
        self.tps = {p: TopicPartition(topic, p) for p in partitions}

    async def end_offsets(self) -> dict[int, int]:
        ends = await self.consumer.end_offsets(list(self.tps.values()))
        return {tp.partition: int(offset) for tp, offset in ends.items()}

    async def resume(self, from_offset: int) -> dict[int, int]:
        firsts = await self.consumer.beginning_offsets(list(self.tps.values()))
        positions: dict[int, int] = {}
        for p, tp in self.tps.items():
            committed = await self.consumer.committed(tp)
            position = committed if committed is not None else max(from_offset, int(firsts[tp]))
            self.consumer.seek(tp, position)
            positions[p] = position
        return positions

    async def fetch(self, ends: dict[int, int], max_records: int) -> tuple[list[Any], dict[int, int]]:
        open_tps = [tp for p, tp in self.tps.items() if await self.consumer.position(tp) < ends.get(p, 0)]
        records: list[Any] = []
        if open_tps:
            batch = await self.consumer.getmany(*open_tps, timeout_ms=1000, max_records=max_records)
            for tp in open_tps:
                records += [r for r in batch.get(tp, []) if r.offset < ends[tp.partition]]
        positions = {
            p: min(await self.consumer.position(tp), ends.get(p, 0)) for p, tp in self.tps.items()
        }
        return records, positions

    async def commit(self, positions: dict[int, int]) -> None:
        await self.consumer.commit({self.tps[p]: OffsetAndMetadata(o, "") for p, o in positions.items()})


@asynccontextmanager
async def open_replay(bootstrap: str, topic: str, group: str, max_records: int) -> AsyncIterator[KafkaReplay]:
    consumer = AIOKafkaConsumer(
        **kafka_client_options(), bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", max_poll_records=max_records, client_id=f"flywheel-{group}",
    )
    admin = AIOKafkaAdminClient(**kafka_client_options(), bootstrap_servers=bootstrap,
                                request_timeout_ms=15_000)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if not described or described[0]["error_code"] or not described[0]["partitions"]:
        raise LookupError(f"topic {topic!r} does not exist")
    partitions = sorted(p["partition"] for p in described[0]["partitions"])
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        yield KafkaReplay(consumer, topic, partitions)
    finally:
        await consumer.stop()
