"""The sessions service: clicks -> one MongoDB document per search session, then commit.

Run: `uvicorn consumers.sessions.app:app`. Batches are folded idempotently (event ids kept
per session); offsets are committed only after the documents are written. Invalid records
go to `clicks.dlq`; a transient MongoDB failure rewinds the batch and retries after a pause.
When `training_policy_sessions` > 0, it requests training after that many new sessions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

from faststream import AckPolicy
from faststream.exceptions import NackMessage
from pymongo.errors import PyMongoError

from consumers.parking import DeadLetter, send_dead_letters
from consumers.service import create_app, create_broker, raw_message
from consumers.sessions.handlers import ConcurrentUpdates, fold_batch, maybe_request_training
from core.adapters.session_store import MongoSessionStore
from core.bootstrap import build_session_store
from core.config import get_settings
from core.sessions import SessionEventModel
from schemas.codec import EventValidationError, decode_record, encode
from schemas.topics import CLICKS, TRAINING_REQUESTED
from schemas.training import TrainingRequested

log = logging.getLogger("flywheel.sessions")
settings = get_settings()
broker, registry = create_broker("sessions", settings)
PURGE_EVERY_S = 3600.0

deps: dict[str, MongoSessionStore] = {}
last_purge = {"at": 0.0}


async def open_dependencies() -> None:
    deps["sessions"] = await build_session_store(settings)


async def close_dependencies() -> None:
    if "sessions" in deps:
        await deps.pop("sessions").close()


def parse_records(records: tuple[Any, ...]) -> tuple[list[SessionEventModel], list[DeadLetter]]:
    events: list[SessionEventModel] = []
    letters: list[DeadLetter] = []
    for record in records:
        try:
            event = decode_record(record)
            if event is None:
                raise ValueError("a null value is not a session event")
        except (EventValidationError, ValueError) as error:
            letters.append(DeadLetter(record, str(error), error))
            continue
        assert isinstance(event, SessionEventModel)
        events.append(event)
    return events, letters


async def publish_training(event: TrainingRequested) -> None:
    await broker.publish(
        encode(event), topic=TRAINING_REQUESTED.name, key=event.run_id.encode(),
        headers={"content-type": "application/json"},
    )


@broker.subscriber(
    CLICKS.name,
    group_id="sessions",
    batch=True,
    max_records=settings.sessions_batch_size,
    batch_timeout_ms=settings.sessions_batch_timeout_ms,
    auto_offset_reset="earliest",
    ack_policy=AckPolicy.NACK_ON_ERROR,
    decoder=raw_message,
)
async def on_clicks(records: Any) -> None:
    records = tuple(records)
    events, letters = parse_records(records)
    store = deps["sessions"]
    now = datetime.now(UTC)
    try:
        report = await fold_batch(events, store, now)
        await maybe_request_training(
            store, settings.training_policy_sessions, settings.training_policy_min_sessions,
            publish_training, now,
        )
        if not store.ttl_index and time.monotonic() - last_purge["at"] > PURGE_EVERY_S:
            last_purge["at"] = time.monotonic()
            if purged := await store.purge_expired(now):
                log.info("purged %d expired sessions", purged)
    except (PyMongoError, ConcurrentUpdates) as error:
        log.warning("transient failure, batch of %d will be retried: %s", len(records), error)
        await asyncio.sleep(settings.retry_backoff_s)
        raise NackMessage() from error
    await send_dead_letters(broker, letters)
    log.info(
        "batch of %d: %d applied, %d repeated, %d sessions new, %d updated, %d dead letters",
        len(records), report.applied, report.duplicates, report.sessions_created,
        report.sessions_updated, len(letters),
    )


app = create_app("sessions", broker, registry, lag_of=("sessions", "clicks"))
app.on_startup(open_dependencies)
app.after_shutdown(close_dependencies)
