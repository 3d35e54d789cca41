"""The indexer service: content-upserted -> chunks -> Triton -> pgvector, then commit. Each
item is written into the versions its tenant serves, builds or can roll back to.

Run: `uvicorn consumers.indexer.app:app`. Offsets are committed only after the batch is in
PostgreSQL and its dead letters are acknowledged by Kafka (consumers.service).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from consumers.service import ConsumerService, ServiceContext
from core.adapters.pgvector import PgVectorStore
from core.adapters.triton_embedder import TritonEmbedder
from core.bootstrap import build_chunker, build_embedder, build_store, ensure_initial_version
from core.chunking import Chunker
from core.indexing import IndexReport, Operation, index_batch, parse_operation
from schemas.topics import CONTENT_UPSERTED


@dataclass(frozen=True)
class Indexer:
    store: PgVectorStore
    embedder: TritonEmbedder
    chunker: Chunker


async def open_resources(ctx: ServiceContext) -> Indexer:
    store = ctx.closing(await build_store(ctx.settings))
    embedder = ctx.closing(build_embedder(ctx.settings))
    await ensure_initial_version(store, embedder)
    return Indexer(store, embedder, build_chunker(ctx.settings))


service = ConsumerService("indexer", open_resources)


async def index(part: Sequence[tuple[Any, Operation]], indexer: Indexer) -> list[tuple[Any, str]]:
    """Index the batch; the upserts the store rejects (a vector of the wrong size) are parked."""
    record_of = {id(op): record for record, op in part}
    # Each item goes into the versions its tenant serves or builds (the tenant's lineage).
    per_tenant: dict[str, list[Operation]] = {}
    for _, op in part:
        per_tenant.setdefault(op.key[0], []).append(op)
    report = IndexReport()
    for tenant, operations in per_tenant.items():
        report.merge(await index_batch(operations, indexer.store.for_tenant(tenant), indexer.embedder,
                                       indexer.chunker))
    service.log.info("batch of %d: %d upserted, %d deleted, %d unchanged, %d rejected", len(part),
                     report.upserted, report.deleted, report.skipped, len(report.rejected))
    return [(record_of[id(upsert)], reason) for upsert, reason in report.rejected]


service.consume_batch(
    CONTENT_UPSERTED, parse_operation, index,
    group_id=service.settings.indexer_group,
    max_records=service.settings.indexer_batch_size,
    batch_timeout_ms=service.settings.indexer_batch_timeout_ms,
)
broker = service.broker
app = service.app()
