"""Indexing a batch of content-upserted events: free of I/O, over the store and embedder ports.

Used by the indexer (live) and the reindexer (backfill of one version).

Per batch: keep the last operation per item (the highest version of repeated upserts),
chunk, embed only what the store does not hold yet for each writable model version (the
active one, and one being built during a reindex), then apply everything in one transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.chunking import Chunker
from core.domain import ChunkVectors, Item
from core.ports import Embedder, VectorStore
from schemas.codec import KafkaRecord, decode_record, parse_content_key
from schemas.content import ContentUpserted

Key = tuple[str, str]


@dataclass(frozen=True)
class Upsert:
    event: ContentUpserted

    @property
    def key(self) -> Key:
        return (self.event.tenant, self.event.id)


@dataclass(frozen=True)
class Delete:
    tenant: str
    id: str

    @property
    def key(self) -> Key:
        return (self.tenant, self.id)


Operation = Upsert | Delete


def parse_operation(record: KafkaRecord) -> Operation:
    """The record's operation: an upsert, or a delete for a tombstone. Raises
    EventValidationError (or ValueError for a bad key) when the record is invalid."""
    event = decode_record(record)
    if event is None:
        tenant, item_id = parse_content_key(record.key)
        return Delete(tenant, item_id)
    if not isinstance(event, ContentUpserted):
        raise ValueError(f"{record.topic} accepts content-upserted events, not {event.type}")
    return Upsert(event)


def parse_records(
    records: Sequence[KafkaRecord],
) -> tuple[list[tuple[Any, Operation]], list[tuple[Any, ValueError]]]:
    """Each valid record with its operation, and each invalid one with its error."""
    operations: list[tuple[Any, Operation]] = []
    invalid: list[tuple[Any, ValueError]] = []
    for record in records:
        try:
            operations.append((record, parse_operation(record)))
        except ValueError as error:  # EventValidationError included
            invalid.append((record, error))
    return operations, invalid


@dataclass
class IndexReport:
    upserted: int = 0
    deleted: int = 0
    embedded_texts: int = 0
    skipped: int = 0
    rejected: list[tuple[Upsert, str]] = field(default_factory=list)

    def merge(self, other: IndexReport) -> None:
        self.upserted += other.upserted
        self.deleted += other.deleted
        self.embedded_texts += other.embedded_texts
        self.skipped += other.skipped
        self.rejected += other.rejected


def coalesce(operations: Iterable[Operation]) -> list[list[Operation]]:
    """Split a batch into rounds in which each item appears once.

    Repeated upserts of one item collapse into the highest version. An upsert after a delete
    of the same item (or the reverse) starts a new round, so the two apply in order.
    """
    rounds: list[dict[Key, Operation]] = [{}]
    for op in operations:
        current = rounds[-1]
        previous = current.get(op.key)
        if previous is None:
            current[op.key] = op
        elif isinstance(op, Upsert) and isinstance(previous, Upsert):
            if op.event.version > previous.event.version:
                current[op.key] = op
        elif isinstance(op, Delete) and isinstance(previous, Delete):
            continue
        else:
            rounds.append({op.key: op})
    return [list(r.values()) for r in rounds if r]


async def index_batch(
    operations: Sequence[Operation],
    store: VectorStore,
    embedder: Embedder,
    chunker: Chunker,
    versions: Sequence[str] | None = None,
) -> IndexReport:
    """Index into `versions` (default: every writable version, as the live indexer does;
    a reindex backfill passes only the version it builds)."""
    report = IndexReport()
    targets = list(versions) if versions is not None else await store.writable_versions()
    dimensions = await store.dimensions()
    for round_ in coalesce(operations):
        await _index_round(round_, store, embedder, chunker, targets, dimensions, report)
    return report


async def _index_round(
    operations: list[Operation],
    store: VectorStore,
    embedder: Embedder,
    chunker: Chunker,
    versions: list[str],
    dimensions: dict[str, int],
    report: IndexReport,
) -> None:
    upserts = [op for op in operations if isinstance(op, Upsert)]
    deletes = [op.key for op in operations if isinstance(op, Delete)]
    pending = await store.pending({u.key: u.event.version for u in upserts}, versions) if upserts else {}

    chunk_sets: dict[str, list[ChunkVectors]] = {}
    rejected: set[Key] = set()
    for version in versions:
        todo = [u for u in upserts if u.key in pending.get(version, set()) and u.key not in rejected]
        imported, to_embed = [], []
        for upsert in todo:
            event = upsert.event
            if event.vector is not None and event.model_version == version:
                if len(event.vector) != dimensions.get(version):
                    reason = (f"vector has {len(event.vector)} dimensions; model version {version} "
                              f"has {dimensions.get(version)}")
                    report.rejected.append((upsert, reason))
                    rejected.add(upsert.key)
                    continue
                imported.append(upsert)
            else:
                to_embed.append(upsert)
        chunk_sets[version] = [_imported(u) for u in imported] + await _embed(
            to_embed, version, embedder, chunker, report
        )
    chunk_sets = {v: [c for c in sets if (c.item.tenant, c.item.id) not in rejected]
                  for v, sets in chunk_sets.items()}
    report.skipped += len(upserts) - len({(c.item.tenant, c.item.id) for s in chunk_sets.values() for c in s})
    if not deletes and not any(chunk_sets.values()):
        return
    await store.apply(chunk_sets, deletes)
    report.upserted += len({(c.item.tenant, c.item.id) for s in chunk_sets.values() for c in s})
    report.deleted += len(deletes)


def _item(event: ContentUpserted) -> Item:
    return Item(event.tenant, event.id, event.title, event.text, dict(event.metadata), event.version)


def _imported(upsert: Upsert) -> ChunkVectors:
    vector = np.asarray(upsert.event.vector, dtype=np.float32)
    norm = float(np.linalg.norm(vector)) or 1.0
    return ChunkVectors(_item(upsert.event), [upsert.event.text], (vector / norm)[None, :])


async def _embed(
    upserts: list[Upsert], version: str, embedder: Embedder, chunker: Chunker, report: IndexReport
) -> list[ChunkVectors]:
    if not upserts:
        return []
    # Tokenizing a batch is CPU work of tens of milliseconds: off the event loop, so the
    # service keeps answering health checks and Kafka heartbeats meanwhile.
    texts_per_item = await asyncio.to_thread(
        lambda: [chunker.split_item(u.event.title, u.event.text, u.event.metadata) for u in upserts])
    flat = [text for texts in texts_per_item for text in texts]
    embeddings = await embedder.embed(flat, version)
    report.embedded_texts += len(flat)
    result, start = [], 0
    for upsert, texts in zip(upserts, texts_per_item, strict=True):
        vectors = embeddings.vectors[start : start + len(texts)]
        result.append(ChunkVectors(_item(upsert.event), texts, vectors))
        start += len(texts)
    return result
