"""The registry's topics on a cluster: `python -m kafka_ops.topics` creates what is missing.

Every topic of schemas.topics with its partitions, cleanup policy and retention, and its
dead-letter topic. Idempotent: existing topics are left as they are. The local runtime runs it
once the broker is up; compose runs it as the `kafka-init` job.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from core.config import get_settings
from core.kafka_auth import kafka_client_options
from schemas.topics import TOPICS


async def ensure_topics(bootstrap: str, options: dict[str, Any] | None = None) -> list[str]:
    """Create every registry topic and its dead-letter topic that does not exist yet (as the
    principal `options` name; default: this process's, core/kafka_auth.py)."""
    admin = AIOKafkaAdminClient(
        **(kafka_client_options() if options is None else options),
        bootstrap_servers=bootstrap, request_timeout_ms=10000,
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted: list[NewTopic] = []
        for spec in TOPICS.values():
            if spec.name not in existing:
                wanted.append(NewTopic(spec.name, spec.partitions, 1,
                                       topic_configs=spec.kafka_config()))
            if spec.dlq not in existing:
                wanted.append(NewTopic(spec.dlq, spec.partitions, 1,
                                       topic_configs=spec.dlq_config()))
        if wanted:
            await admin.create_topics(wanted)
        return [topic.name for topic in wanted]
    finally:
        await admin.close()


def main() -> None:
    bootstrap = get_settings().bootstrap_servers
    created = asyncio.run(ensure_topics(bootstrap))
    print(f"{bootstrap}: created", ", ".join(created) if created else "nothing (all topics exist)")


if __name__ == "__main__":
    main()
