"""Reads: nearest items by vector (HNSW, filtered), by text (BM25, in `bm25`), exactly (a
sequential scan, the reference for recall), and items' titles and metadata."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from psycopg import sql
from psycopg.types.json import Jsonb

from core.adapters.pgvector.bm25 import Bm25Queries
from core.adapters.pgvector.schema import chunk_table
from core.domain import NEW_TENANTS
from core.snippets import ItemView

# Candidates of every vector search (items, and chunks per item asked of the index) and the
# least HNSW candidate list (`hnsw.ef_search`): a query for k <= CANDIDATE_ITEMS runs the same
# index scan whatever its k, so its top 10 at k=10 are its top 10 at k=100; measured with
# `flywheel bench search` (docs/benchmarks.md).
CANDIDATE_ITEMS = 100
CHUNKS_PER_ITEM = 2
EF_SEARCH = 200


class Queries(Bm25Queries):
    async def vector_search(
        self, version: str, tenant: str, query: np.ndarray, k: int, filters: dict[str, Any]
    ) -> list[tuple[str, float]]:
        """Top-k items by their best chunk. The index is asked for the same candidates
        (CANDIDATE_ITEMS items, HNSW list EF_SEARCH) whatever k up to CANDIDATE_ITEMS, so a
        query's first results do not depend on how many it asks for; keeps scanning until
        that many items match the filters."""
        table = chunk_table(version)
        depth = max(k, CANDIDATE_ITEMS)
        limit = depth * CHUNKS_PER_ITEM
        query_sql = sql.SQL(
            "SELECT item_id, 1 - (embedding <=> %(q)s) AS score FROM {t} "
            "WHERE tenant = %(tenant)s AND metadata @> %(filters)s "
            "ORDER BY embedding <=> %(q)s LIMIT %(limit)s"
        ).format(t=table)
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SET LOCAL hnsw.iterative_scan = strict_order")
            while True:
                await conn.execute(
                    sql.SQL("SET LOCAL hnsw.ef_search = {}").format(
                        sql.Literal(min(max(limit, EF_SEARCH), 1000)))
                )
                rows = await (await conn.execute(query_sql, {
                    "q": np.asarray(query, dtype=np.float32), "tenant": tenant,
                    "filters": Jsonb(filters), "limit": limit,
                })).fetchall()
                best: dict[str, float] = {}
                for item_id, score in rows:
                    best.setdefault(item_id, float(score))
                if len(best) >= depth or len(rows) < limit:
                    break
                limit *= 4
        return sorted(best.items(), key=lambda pair: (-pair[1], pair[0]))[:k]

    async def exact_search(
        self, version: str, tenant: str, query: np.ndarray, k: int
    ) -> list[tuple[str, float]]:
        """Exact nearest items by a sequential scan: the reference for recall measurements."""
        table = chunk_table(version)
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SET LOCAL enable_indexscan = off")
            rows = await (await conn.execute(
                sql.SQL(
                    "SELECT item_id, max(1 - (embedding <=> %(q)s)) AS score FROM {t} "
                    "WHERE tenant = %(tenant)s GROUP BY item_id ORDER BY score DESC LIMIT %(k)s"
                ).format(t=table),
                {"q": np.asarray(query, dtype=np.float32), "tenant": tenant, "k": k},
            )).fetchall()
        return [(row[0], float(row[1])) for row in rows]

    async def describe(self, tenant: str, ids: Sequence[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(
                "SELECT id, title, metadata FROM items WHERE tenant = %s AND id = ANY(%s)",
                (tenant, list(ids)),
            )).fetchall()
        return {row[0]: (row[1], row[2]) for row in rows}

    async def describe_best(
        self, version: str, tenant: str, query: np.ndarray, ids: Sequence[str], chars: int
    ) -> dict[str, ItemView]:
        """Title, metadata and best chunk of each item, in one query over the chunks of these
        items only (their primary key, no index scan): core.snippets.BestChunks."""
        rows = await self._fetch(sql.SQL(
            "SELECT i.id, i.title, i.metadata, coalesce(b.chunk_no, 0) AS chunk_no, "
            " CASE WHEN coalesce(b.chunk_no, 0) = 0 THEN left(i.text, %(chars)s) ELSE i.text END, i.version "
            "FROM items i LEFT JOIN ("
            " SELECT DISTINCT ON (item_id) item_id, chunk_no FROM {t} "
            " WHERE tenant = %(tenant)s AND item_id = ANY(%(ids)s) "
            " ORDER BY item_id, embedding <=> %(q)s) b ON b.item_id = i.id "
            "WHERE i.tenant = %(tenant)s AND i.id = ANY(%(ids)s)"
        ).format(t=chunk_table(version)), {
            "tenant": tenant, "ids": list(ids), "q": np.asarray(query, dtype=np.float32), "chars": chars})
        return {row[0]: ItemView(row[1], row[2], int(row[3]), row[4], int(row[5])) for row in rows}

    async def _fetch(self, statement: sql.Composed, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        async with self.pool.connection() as conn:
            return await (await conn.execute(statement, params)).fetchall()

    async def count_items(self, tenant: str | None = None) -> int:
        async with self.pool.connection() as conn:
            if tenant is None:
                row = await (await conn.execute("SELECT count(*) FROM items")).fetchone()
            else:
                row = await (await conn.execute(
                    "SELECT count(*) FROM items WHERE tenant = %s", (tenant,))).fetchone()
        return int(row[0]) if row else 0

    async def item_record(self, tenant: str, item_id: str) -> dict[str, Any] | None:
        """The item as stored (title, text, metadata, version, `indexed_at`: when that version
        was written) and, per model version with a chunk table, its status, whether it is the
        tenant's active one, and the chunks of the item it holds with their item version: an item is
        searchable with a version whose table holds chunks of it."""
        async with self.pool.connection() as conn:
            row = await (await conn.execute(
                "SELECT id, title, text, metadata, version, updated_at FROM items "
                "WHERE tenant = %s AND id = %s", (tenant, item_id))).fetchone()
            if row is None:
                return None
            # The versions of the tenant's lineage (see core.adapters.pgvector.versions).
            versions = await (await conn.execute(
                "WITH l AS (SELECT CASE WHEN EXISTS (SELECT 1 FROM tenant_versions WHERE tenant = %(t)s) "
                " OR EXISTS (SELECT 1 FROM tenant_active WHERE tenant = %(t)s) THEN %(t)s ELSE %(new)s END "
                " AS tenant) "
                "SELECT v.version, v.status, a.version IS NOT NULL FROM tenant_versions v "
                "LEFT JOIN tenant_active a ON a.tenant = v.tenant AND a.version = v.version "
                "WHERE v.tenant = (SELECT tenant FROM l) "
                " AND to_regclass('chunks_v' || v.version) IS NOT NULL ORDER BY v.version::bigint",
                {"t": tenant, "new": NEW_TENANTS},
            )).fetchall()
            indexes = []
            for version, status, active in versions:
                counted = await (await conn.execute(sql.SQL(
                    "SELECT count(*), max(item_version) FROM {t} WHERE tenant = %s AND item_id = %s"
                ).format(t=chunk_table(version)), (tenant, item_id))).fetchone()
                chunks, item_version = (counted[0], counted[1]) if counted else (0, None)
                indexes.append({"version": version, "status": status, "active": bool(active),
                                "chunks": int(chunks), "item_version": item_version})
        return {"id": row[0], "title": row[1], "text": row[2], "metadata": row[3], "version": row[4],
                "indexed_at": row[5], "indexes": indexes}
