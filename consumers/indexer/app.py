"""The indexer service: content-upserted -> chunks -> Triton -> pgvector, then commit.

Run: `uvicorn consumers.indexer.app:app`. Offsets are committed only after the batch is in
PostgreSQL and its dead letters are acknowledged by Kafka; on a transient failure the
batch is rewound and retried after a pause.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg_pool
from faststream import AckPolicy
from faststream.exceptions import NackMessage
from tritonclient.utils import InferenceServerException

from consumers.parking import DeadLetter, send_dead_letters
from consumers.poison import process_isolating_poison
from consumers.service import create_app, create_broker, raw_message
from core.adapters.pgvector_store import PgVectorStore
from core.adapters.triton_embedder import EmbedderUnavailable, TritonEmbedder
from core.bootstrap import build_chunker, build_embedder, build_store, ensure_initial_version
from core.chunking import Chunker
from core.config import get_settings
from core.indexing import IndexReport, Operation, index_batch, parse_records
from core.metrics import BATCH_RECORDS
from schemas.topics import CONTENT_UPSERTED

log = logging.getLogger("flywheel.indexer")
# Errors of a dependency, never of a record: Triton's included (a version still loading).
TRANSIENT_ERRORS = (
    EmbedderUnavailable, InferenceServerException, psycopg.OperationalError, psycopg_pool.PoolTimeout,
    ConnectionError, TimeoutError,
)
settings = get_settings()
broker, registry = create_broker("indexer", settings)


@dataclass
class Dependencies:
    store: PgVectorStore
    embedder: TritonEmbedder
    chunker: Chunker


deps: dict[str, Dependencies] = {}


async def open_dependencies() -> None:
    store = await build_store(settings)
    embedder = build_embedder(settings)
    await ensure_initial_version(store, embedder)
    deps["indexer"] = Dependencies(store, embedder, build_chunker(settings))


async def close_dependencies() -> None:
    if "indexer" in deps:
        await deps["indexer"].store.close()
        await deps["indexer"].embedder.close()


@broker.subscriber(
    CONTENT_UPSERTED.name,
    group_id=settings.indexer_group,
    batch=True,
    max_records=settings.indexer_batch_size,
    batch_timeout_ms=settings.indexer_batch_timeout_ms,
    auto_offset_reset="earliest",
    ack_policy=AckPolicy.NACK_ON_ERROR,
    decoder=raw_message,
)
async def on_content(records: Any) -> None:
    records = tuple(records)
    BATCH_RECORDS.labels(CONTENT_UPSERTED.name).observe(len(records))
    parsed, invalid = parse_records(records)
    letters = [DeadLetter(record, str(error), error) for record, error in invalid]
    d = deps["indexer"]
    report = IndexReport()

    async def index(part: Sequence[tuple[Any, Operation]]) -> None:
        report.merge(await index_batch([op for _, op in part], d.store, d.embedder, d.chunker))

    try:
        poisoned = await process_isolating_poison(parsed, index, is_transient)
    except Exception as error:  # only transient errors get here
        log.warning("transient failure, batch of %d will be retried: %r", len(records), error)
        await asyncio.sleep(settings.retry_backoff_s)
        raise NackMessage() from error
    record_of = {id(op): record for record, op in parsed}
    letters += [DeadLetter(record_of[id(upsert)], reason) for upsert, reason in report.rejected]
    letters += [DeadLetter(record, f"{type(error).__name__}: {error}", error)
                for (record, _), error in poisoned]
    await send_dead_letters(broker, letters)
    log.info(
        "batch of %d: %d upserted, %d deleted, %d unchanged, %d dead letters",
        len(records), report.upserted, report.deleted, report.skipped, len(letters),
    )


def is_transient(error: BaseException) -> bool:
    """A dependency that is down or restarting: retry the batch later, don't park records."""
    return isinstance(error, TRANSIENT_ERRORS)


app = create_app("indexer", broker, registry, lag_of=(settings.indexer_group, CONTENT_UPSERTED.name))
app.on_startup(open_dependencies)
app.after_shutdown(close_dependencies)
