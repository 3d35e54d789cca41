"""The reindexer service: reindex-requested -> backfill a version's index -> switch search to it.

Run: `uvicorn consumers.reindexer.app:app`. The request's offset is committed when the
reindex has finished (or failed for good), so a crash mid-backfill redelivers it and the
backfill resumes from its replay group's committed offsets. Infrastructure failures
(Triton, PostgreSQL, Kafka, MongoDB down) are retried after a pause.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from aiokafka.errors import KafkaError
from faststream import AckPolicy
from faststream.exceptions import NackMessage
from pymongo.errors import ConnectionFailure

from consumers.parking import decode_or_park
from consumers.reindexer.handlers import ReindexDeps, ReplaySource, reindex
from consumers.reindexer.replay import open_replay
from consumers.service import create_app, create_broker, raw_message
from core.adapters.pgvector_store import PgVectorStore
from core.adapters.task_store import TaskStore
from core.adapters.triton_embedder import EmbedderUnavailable, TritonEmbedder
from core.bootstrap import build_chunker, build_embedder, build_store, build_task_store
from core.chunking import Chunker
from core.config import get_settings
from schemas.reindex import ReindexRequested
from schemas.topics import CONTENT_UPSERTED, REINDEX_REQUESTED

log = logging.getLogger("flywheel.reindexer")
settings = get_settings()
broker, registry = create_broker("reindexer", settings)

TRANSIENT = (EmbedderUnavailable, psycopg.OperationalError, KafkaError, ConnectionFailure, OSError)


def is_transient(error: BaseException) -> bool:
    return isinstance(error, TRANSIENT)


@dataclass
class Resources:
    tasks: TaskStore
    store: PgVectorStore
    embedder: TritonEmbedder
    chunker: Chunker

    def deps(self) -> ReindexDeps:
        @asynccontextmanager
        async def replay(group: str) -> AsyncIterator[ReplaySource]:
            async with open_replay(
                settings.bootstrap_servers, CONTENT_UPSERTED.name, group, settings.reindex_batch_size
            ) as source:
                yield source

        return ReindexDeps(
            tasks=self.tasks, store=self.store, embedder=self.embedder, chunker=self.chunker,
            open_replay=replay, batch_size=settings.reindex_batch_size,
            max_rate=settings.reindex_max_rate, is_transient=is_transient,
        )


resources: dict[str, Resources] = {}


async def open_resources() -> None:
    resources["reindexer"] = Resources(
        await build_task_store(settings), await build_store(settings), build_embedder(settings),
        build_chunker(settings),
    )


async def close_resources() -> None:
    if "reindexer" in resources:
        r = resources.pop("reindexer")
        await r.embedder.close()
        await r.store.close()
        await r.tasks.close()


@broker.subscriber(
    REINDEX_REQUESTED.name,
    group_id="reindexer",
    auto_offset_reset="earliest",
    ack_policy=AckPolicy.NACK_ON_ERROR,
    max_poll_interval_ms=settings.rollout_max_poll_interval_ms,
    decoder=raw_message,
)
async def on_reindex_requested(record: Any) -> None:
    event = await decode_or_park(broker, record, ReindexRequested)
    if event is None:
        return
    try:
        task = await reindex(event, resources["reindexer"].deps())
    except Exception as error:
        log.warning("reindex of %s interrupted, will be retried: %r", event.model_version, error)
        await asyncio.sleep(settings.retry_backoff_s)
        raise NackMessage() from error
    log.info("reindex-%s: %s (%s)", event.model_version, task["status"], task.get("error") or task["stage"])


app = create_app("reindexer", broker, registry)
app.on_startup(open_resources)
app.after_shutdown(close_resources)
