"""The indexer service: content-upserted -> chunks -> Triton -> pgvector, then commit.

Run: `uvicorn consumers.indexer.app:app`. Offsets are committed only after the batch is in
PostgreSQL and its dead letters are acknowledged by Kafka; on a transient failure the
batch is rewound and retried after a pause.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import psycopg
from faststream import AckPolicy
from faststream.exceptions import NackMessage

from consumers.dead_letters import DeadLetter, send_dead_letters
from consumers.indexer.handlers import index_batch, parse_records
from consumers.service import create_app, create_broker
from core.adapters.pgvector_store import PgVectorStore
from core.adapters.triton_embedder import EmbedderUnavailable, TritonEmbedder
from core.bootstrap import build_chunker, build_embedder, build_store, ensure_initial_version
from core.chunking import Chunker
from core.config import get_settings
from schemas.registry import CONTENT_UPSERTED

log = logging.getLogger("flywheel.indexer")
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


async def raw_records(message: Any) -> Any:
    return message.raw_message


@broker.subscriber(
    CONTENT_UPSERTED.name,
    group_id="indexer",
    batch=True,
    max_records=settings.indexer_batch_size,
    batch_timeout_ms=settings.indexer_batch_timeout_ms,
    auto_offset_reset="earliest",
    ack_policy=AckPolicy.NACK_ON_ERROR,
    decoder=raw_records,
)
async def on_content(records: Any) -> None:
    records = tuple(records)
    parsed, letters = parse_records(records)
    d = deps["indexer"]
    try:
        report = await index_batch([op for _, op in parsed], d.store, d.embedder, d.chunker)
    except (EmbedderUnavailable, psycopg.OperationalError) as error:
        log.warning("transient failure, batch of %d will be retried: %s", len(records), error)
        await asyncio.sleep(settings.retry_backoff_s)
        raise NackMessage() from error
    record_of = {id(op): record for record, op in parsed}
    letters += [DeadLetter(record_of[id(upsert)], reason) for upsert, reason in report.rejected]
    await send_dead_letters(broker, letters)
    log.info(
        "batch of %d: %d upserted, %d deleted, %d unchanged, %d dead letters",
        len(records), report.upserted, report.deleted, report.skipped, len(letters),
    )


app = create_app("indexer", broker, registry)
app.on_startup(open_dependencies)
app.on_shutdown(close_dependencies)
