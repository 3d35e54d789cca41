"""The sessions service: clicks -> one MongoDB document per search session, then commit.

Run: `uvicorn consumers.sessions.app:app`. Batches are folded idempotently (event ids kept
per session); offsets are committed only after the documents are written. Invalid records,
and records that fail alone (a poison record), go to `clicks.dlq` and the rest of the batch
is folded. When `training_policy_sessions` > 0, it requests training for a tenant after that
many new sessions of that tenant (its own run, on its own sessions and lineage).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from consumers.error_policy import ErrorPolicy
from consumers.service import ConsumerService, ServiceContext, ServicePublisher
from consumers.sessions.handlers import ConcurrentUpdates, fold_batch, maybe_request_training
from core.adapters.session_store import MongoSessionStore
from core.bootstrap import build_session_store
from core.config import get_settings
from core.metrics import SESSION_CLICKS, SESSION_SEARCHES
from core.sessions import SessionEventModel
from schemas import codec
from schemas.topics import CLICKS, TRAINING_REQUESTED
from schemas.training import TrainingRequested

PURGE_EVERY_S = 3600.0


@dataclass
class Sessions:
    store: MongoSessionStore
    publisher: ServicePublisher
    last_purge: float = field(default=0.0)

    async def request_training(self, event: TrainingRequested) -> None:
        await self.publisher.publish(TRAINING_REQUESTED, event)


async def open_resources(ctx: ServiceContext) -> Sessions:
    return Sessions(ctx.closing(await build_session_store(ctx.settings)), ctx.publisher)


settings = get_settings()
service = ConsumerService("sessions", open_resources, settings=settings, policy=ErrorPolicy(
    max_attempts=settings.consumer_max_attempts, backoff_s=settings.retry_backoff_s,
    max_backoff_s=settings.retry_max_backoff_s, also_transient=(ConcurrentUpdates,),
))


def parse_event(record: Any) -> SessionEventModel:
    event = codec.decode_record(record)
    if not isinstance(event, SessionEventModel):
        raise ValueError("a null value is not a session event")
    return event


async def fold(part: Sequence[tuple[Any, SessionEventModel]], sessions: Sessions) -> list[tuple[Any, str]]:
    now = datetime.now(UTC)
    report = await fold_batch([event for _, event in part], sessions.store, now)
    for version, count in report.searches.items():
        SESSION_SEARCHES.labels(version).inc(count)
        SESSION_CLICKS.labels(version)  # a version's click-through is 0, not missing, before a click
    for version, count in report.clicks.items():
        SESSION_CLICKS.labels(version).inc(count)
    for tenant in sorted({event.tenant for _, event in part}):  # each tenant its own policy
        await maybe_request_training(
            sessions.store.for_tenant(tenant), settings.training_policy_sessions,
            settings.training_policy_min_sessions, sessions.request_training, now, tenant,
        )
    if not sessions.store.ttl_index and time.monotonic() - sessions.last_purge > PURGE_EVERY_S:
        sessions.last_purge = time.monotonic()
        if purged := await sessions.store.purge_expired(now):
            service.log.info("purged %d expired sessions", purged)
    service.log.info("batch of %d: %d applied, %d repeated, %d sessions new, %d updated", len(part),
                     report.applied, report.duplicates, report.sessions_created, report.sessions_updated)
    return []


service.consume_batch(
    CLICKS, parse_event, fold, group_id="sessions",
    max_records=settings.sessions_batch_size, batch_timeout_ms=settings.sessions_batch_timeout_ms,
)
broker = service.broker
app = service.app()
