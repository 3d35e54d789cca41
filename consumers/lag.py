"""Consumer lag per partition, published as the flywheel_consumer_lag gauge."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from core.kafka_auth import kafka_client_options
from core.metrics import COMMITTED_OFFSET, CONSUMER_LAG, TOPIC_END_OFFSET

log = logging.getLogger(__name__)


async def _offsets(viewer: AIOKafkaConsumer, topic: str) -> dict[int, tuple[int, int]]:
    """(end offset, the viewer's group's committed offset) per partition of `topic`."""
    partitions = [TopicPartition(topic, p) for p in sorted(viewer.partitions_for_topic(topic) or ())]
    ends = await viewer.end_offsets(partitions)
    return {tp.partition: (ends[tp], await viewer.committed(tp) or 0) for tp in partitions}


async def _lag(viewer: AIOKafkaConsumer, topic: str) -> dict[int, int]:
    """End offset minus the viewer's group's committed offset, per partition of `topic`."""
    offsets = await _offsets(viewer, topic)
    return {partition: end - committed for partition, (end, committed) in offsets.items()}


def _viewer(bootstrap: str, group: str, metadata_max_age_s: float = 300.0) -> AIOKafkaConsumer:
    # A group id to read the group's committed offsets; it never subscribes, so never joins.
    # Subscribing to nothing, its client refreshes the metadata of all topics every
    # `metadata_max_age_s`: that is how a topic created after it started (or a partition added)
    # is seen, since `topics()` fetches metadata without keeping it.
    return AIOKafkaConsumer(**kafka_client_options(), bootstrap_servers=bootstrap, group_id=group,
                            enable_auto_commit=False,
                            metadata_max_age_ms=int(metadata_max_age_s * 1000))


async def measure_lag(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    viewer = _viewer(bootstrap, group)
    await viewer.start()
    try:
        return await _lag(viewer, topic)
    finally:
        await viewer.stop()


async def report_lag_forever(bootstrap: str, group: str, topic: str, every_s: float = 15.0) -> None:
    """Every `every_s`, through one connection kept open (opened again after a failure)."""
    viewer: AIOKafkaConsumer | None = None
    try:
        while True:
            try:
                if viewer is None:
                    viewer = _viewer(bootstrap, group, metadata_max_age_s=every_s / 3)
                    await viewer.start()
                # The offsets too: their rates are the events/s written and consumed.
                for partition, (end, committed) in (await _offsets(viewer, topic)).items():
                    CONSUMER_LAG.labels(group, topic, str(partition)).set(end - committed)
                    TOPIC_END_OFFSET.labels(topic, str(partition)).set(end)
                    COMMITTED_OFFSET.labels(group, topic, str(partition)).set(committed)
            except (KafkaError, OSError, TimeoutError) as error:
                log.debug("lag of %s on %s not measured: %r", group, topic, error)
                if viewer is not None:
                    with contextlib.suppress(KafkaError, OSError):
                        await viewer.stop()
                    viewer = None
            await asyncio.sleep(every_s)
    finally:
        if viewer is not None:
            await viewer.stop()
