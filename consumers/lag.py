"""Consumer lag per partition, published as the flywheel_consumer_lag gauge."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from core.adapters.kafka_admin import connect_kafka
from core.metrics import CONSUMER_LAG

log = logging.getLogger(__name__)


async def measure_lag(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    async with connect_kafka(bootstrap) as kafka:
        partitions = [TopicPartition(topic, p) for p in await kafka.partitions(topic)]
        ends = await kafka.consumer.end_offsets(partitions)
    viewer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await viewer.start()
    try:
        lag = {}
        for tp in partitions:
            committed = await viewer.committed(tp)
            lag[tp.partition] = ends[tp] - (committed or 0)
    finally:
        await viewer.stop()
    return lag


async def report_lag_forever(bootstrap: str, group: str, topic: str, every_s: float = 15.0) -> None:
    while True:
        with contextlib.suppress(KafkaError, OSError, TimeoutError):
            for partition, lag in (await measure_lag(bootstrap, group, topic)).items():
                CONSUMER_LAG.labels(group, topic, str(partition)).set(lag)
        await asyncio.sleep(every_s)
