"""Small Kafka helpers for the integration tests: make topics, read what was written."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord

from core.config import Settings
from core.kafka_auth import kafka_client_options, local_credentials


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def create_topic(bootstrap: str, partitions: int = 3, prefix: str = "test") -> str:
    name = unique(prefix)
    admin = AIOKafkaAdminClient(**kafka_client_options(), bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
    return name


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(**kafka_client_options(), bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        partitions = await _partitions(consumer, topic)
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def read_from(
    bootstrap: str, topic: str, start: dict[int, int] | None = None, timeout_s: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record from ``start`` (default: the beginning) up to the current end, in partition order."""
    consumer = AIOKafkaConsumer(**kafka_client_options(), bootstrap_servers=bootstrap,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = await _partitions(consumer, topic)
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, (start or {}).get(tp.partition, 0))
        records: dict[int, list[ConsumerRecord[bytes, bytes]]] = {p: [] for p in partitions}

        async def drain() -> None:
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                batch = await consumer.getmany(timeout_ms=500)
                for tp, got in batch.items():
                    records[tp.partition] += [r for r in got if r.offset < ends[tp]]

        await asyncio.wait_for(drain(), timeout_s)
        return [r for p in partitions for r in records[p]]
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[int]:
    metadata = await consumer._client.fetch_all_metadata()
    found = metadata.partitions_for_topic(topic)
    if not found:
        raise AssertionError(f"topic {topic} has no partitions")
    return sorted(found)



def kcat_credentials(settings: Settings, principal: str = "external") -> list[str]:
    """kcat's (librdkafka's) options that authenticate as a principal of the test broker."""
    password = local_credentials(settings)[principal]
    return ["-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=SCRAM-SHA-512",
            "-X", f"sasl.username={principal}", "-X", f"sasl.password={password}"]


def kcat_environment(settings: Settings) -> dict[str, str]:
    """The environment kcat runs in: with the librdkafka of the confluent-kafka wheel (2.6.1 or
    newer). Older ones, such as the 2.0.2 Debian bookworm's kcat links, send a SCRAM proof that
    Kafka 4 refuses (librdkafka#4895), so kcat could not authenticate at all."""
    import confluent_kafka

    wheel_libs = Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs"
    [bundled] = wheel_libs.glob("librdkafka-*.so.1")
    lib = settings.state_dir / "kcat-lib"
    lib.mkdir(parents=True, exist_ok=True)
    link = lib / "librdkafka.so.1"
    if not link.exists():
        link.symlink_to(bundled)
    return {**os.environ, "LD_LIBRARY_PATH": str(lib)}
