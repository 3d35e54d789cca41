"""A short-lived view of the Kafka cluster: topic partitions and offsets, for operator tools
and lag reports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError

from core.kafka_auth import kafka_client_options

_UNKNOWN_TOPIC = 3


class KafkaAdminError(RuntimeError):
    """Kafka cannot answer as asked (unreachable, or no such topic); the message says why."""


@dataclass
class KafkaView:
    bootstrap: str
    admin: AIOKafkaAdminClient
    consumer: AIOKafkaConsumer  # group-less, for offset look-ups and fetching

    async def partitions(self, topic: str) -> list[int]:
        described = await self.admin.describe_topics([topic])
        if not described or described[0]["error_code"] == _UNKNOWN_TOPIC or not described[0]["partitions"]:
            raise KafkaAdminError(f"topic {topic!r} does not exist")
        return sorted(p["partition"] for p in described[0]["partitions"])

    async def offsets_at(self, topic: str, partitions: list[int], ms: int) -> dict[int, int | None]:
        found = await self.consumer.offsets_for_times({TopicPartition(topic, p): ms for p in partitions})
        return {tp.partition: (None if hit is None else hit.offset) for tp, hit in found.items()}

    async def end_offsets(self, topic: str, partitions: list[int]) -> dict[int, int]:
        ends = await self.consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: offset for tp, offset in ends.items()}


@asynccontextmanager
async def connect_kafka(bootstrap: str) -> AsyncIterator[KafkaView]:
    admin = AIOKafkaAdminClient(**kafka_client_options(), bootstrap_servers=bootstrap,
                                request_timeout_ms=15_000)
    consumer = AIOKafkaConsumer(**kafka_client_options(), bootstrap_servers=bootstrap,
                                enable_auto_commit=False)
    try:
        await admin.start()
        await consumer.start()
    except KafkaConnectionError as error:
        await consumer.stop()
        await admin.close()
        raise KafkaAdminError(f"cannot reach Kafka at {bootstrap}: {error}") from error
    try:
        yield KafkaView(bootstrap, admin, consumer)
    finally:
        await consumer.stop()
        await admin.close()


async def ensure_topics(bootstrap: str, topics: dict[str, tuple[int, dict[str, str]]]) -> list[str]:
    """Create each topic (name -> (partitions, config)) that does not exist yet; the created."""
    admin = AIOKafkaAdminClient(**kafka_client_options(), bootstrap_servers=bootstrap,
                                request_timeout_ms=15_000)
    try:
        await admin.start()
    except KafkaConnectionError as error:
        await admin.close()
        raise KafkaAdminError(f"cannot reach Kafka at {bootstrap}: {error}") from error
    try:
        existing = set(await admin.list_topics())
        wanted = [NewTopic(name, partitions, 1, topic_configs=config)
                  for name, (partitions, config) in topics.items() if name not in existing]
        if wanted:
            await admin.create_topics(wanted)
        return [topic.name for topic in wanted]
    finally:
        await admin.close()
