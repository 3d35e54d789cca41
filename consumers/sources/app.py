"""The sources service: Debezium change events of other systems' tables -> content-upserted.

Run: `uvicorn consumers.sources.app:app`. It reads every source's change topic
(`<sources_topic_prefix>.<source>.<schema>.<table>`), maps each change with the source's spec
(core.sources.map_change) to a content-upserted event or a tombstone, keyed as the SDK keys
them, and commits once Kafka acknowledged them. A row that cannot become an item (no id, text
of the wrong type) is parked on its change topic's `.dlq` with the reason; the stream goes on.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from consumers.service import ConsumerService, ServiceContext, ServicePublisher
from core.adapters.source_store import PgSourceStore
from core.sources import Change, Delete, SourceError, SourceSpec, change_source, map_change
from schemas.content import content_key
from schemas.topics import CONTENT_UPSERTED


@dataclass
class Sources:
    store: PgSourceStore
    publisher: ServicePublisher
    specs: dict[str, SourceSpec] = field(default_factory=dict)

    async def know(self, names: set[str]) -> None:
        """Read the specs again when a batch names a source not known yet (a new one: its spec
        is stored before its connector starts; or a removed one): at most once per batch."""
        if names - self.specs.keys():
            self.specs = {spec.name: spec for spec in await self.store.list_sources()}

    async def send(self, change: Change) -> None:
        if isinstance(change, Delete):
            await self.publisher.delete(CONTENT_UPSERTED, content_key(change.tenant, change.id))
        else:
            await self.publisher.publish(CONTENT_UPSERTED, change)


async def open_resources(ctx: ServiceContext) -> Sources:
    return Sources(ctx.closing(PgSourceStore(ctx.settings.postgres_dsn)), ctx.publisher)


# A new source's change topic is found by the pattern subscription at the next metadata
# refresh: every few seconds, not every five minutes.
service = ConsumerService("sources", open_resources, metadata_max_age_ms=3000)
settings = service.settings


def parse_change(record: Any) -> tuple[str, dict[str, Any]]:
    """(source name, Debezium change event); a ValueError (SourceError included) parks it."""
    if record.value is None:
        raise ValueError("a null value is not a change event (tombstones.on.delete must be false)")
    change = json.loads(record.value)
    if not isinstance(change, dict):
        raise ValueError("a change event is a JSON object")
    if "payload" in change and "schema" in change:  # a converter with schemas enabled
        change = change["payload"]
    return change_source(change), change


async def map_and_send(
    part: Sequence[tuple[Any, tuple[str, dict[str, Any]]]], sources: Sources,
) -> list[tuple[Any, str]]:
    rejected: list[tuple[Any, str]] = []
    latest: dict[tuple[str, str], Change] = {}  # only the last change of an item in the batch counts
    await sources.know({name for _, (name, _) in part})
    for record, (name, change) in part:
        try:
            spec = sources.specs.get(name)
            if spec is None:
                service.log.info("change of removed source %s skipped", name)
                continue
            mapped = map_change(change, spec)
        except SourceError as error:
            rejected.append((record, str(error)))
            continue
        latest.pop((mapped.tenant, mapped.id), None)
        latest[(mapped.tenant, mapped.id)] = mapped
    await asyncio.gather(*(sources.send(change) for change in latest.values()))
    service.log.info("batch of %d changes: %d items sent, %d rejected", len(part), len(latest), len(rejected))
    return rejected


service.consume_batch(
    rf"^{re.escape(settings.sources_topic_prefix)}\.[a-z][a-z0-9_]*\.[^.]+\.[^.]+$",
    parse_change, map_and_send, group_id="sources",
    max_records=settings.sources_batch_size, batch_timeout_ms=settings.sources_batch_timeout_ms,
)
broker = service.broker
app = service.app()
