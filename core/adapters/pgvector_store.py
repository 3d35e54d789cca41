"""The vector store on PostgreSQL + pgvector.

Schema:
- `items`: one row per (tenant, id) with title, text, metadata, version; a generated
  tsvector over title and text for hybrid search.
- `chunks_v<version>`: one table per model version (tenant, item_id, chunk_no, metadata,
  embedding) with an HNSW cosine index. Metadata is copied onto chunks so that filters run
  inside the index scan (pgvector 0.8 iterative scans keep returning rows until k match).
- `model_versions` (version, dim, status building|active|retired) and `active_model`, the
  pointer that search follows; switching it is one UPDATE.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from pgvector.psycopg import register_vector_async
from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from core.domain import ChunkVectors, Item
from core.metrics import DB_WRITE_SECONDS

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE IF NOT EXISTS items (
    tenant text NOT NULL,
    id text NOT NULL,
    title text NOT NULL DEFAULT '',
    text text NOT NULL DEFAULT '',
    metadata jsonb NOT NULL DEFAULT '{}',
    version bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    tsv tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', coalesce(title, '')), 'A')
        || setweight(to_tsvector('english', coalesce(text, '')), 'B')
    ) STORED,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX IF NOT EXISTS items_tsv_idx ON items USING gin (tsv);
CREATE INDEX IF NOT EXISTS items_metadata_idx ON items USING gin (metadata jsonb_path_ops);
CREATE TABLE IF NOT EXISTS model_versions (
    version text PRIMARY KEY,
    dim integer NOT NULL,
    status text NOT NULL CHECK (status IN ('building', 'active', 'retired')),
    created_at timestamptz NOT NULL DEFAULT now(),
    activated_at timestamptz
);
-- When a version last stopped being the newest complete one (retired by an activation, or
-- finished without one): the version retired last is the rollback target kept current.
ALTER TABLE model_versions ADD COLUMN IF NOT EXISTS retired_at timestamptz;
CREATE TABLE IF NOT EXISTS active_model (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version text NOT NULL REFERENCES model_versions (version)
);
"""

RRF_K = 60
_tracer = trace.get_tracer("flywheel.vector_store")
_VERSION_RE = re.compile(r"^[0-9]+$")


def chunk_table(version: str) -> sql.Identifier:
    if not _VERSION_RE.match(version):
        raise ValueError(f"model versions are numeric, not {version!r}")
    return sql.Identifier(f"chunks_v{version}")


async def _configure(conn: AsyncConnection) -> None:
    await register_vector_async(conn)


class PgVectorStore:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    @classmethod
    async def connect(cls, dsn: str, max_size: int = 10) -> PgVectorStore:
        # The extension must exist before connections register the vector type.
        async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        pool = AsyncConnectionPool(dsn, min_size=1, max_size=max_size, configure=_configure, open=False)
        await pool.open(wait=True, timeout=30)
        store = cls(pool)
        await store.ensure_schema()
        return store

    async def close(self) -> None:
        await self.pool.close()

    async def ensure_schema(self) -> None:
        async with self.pool.connection() as conn:
            # Serialise concurrent first starts of several services.
            await conn.execute("SELECT pg_advisory_xact_lock(7110)")
            await conn.execute(SCHEMA)

    # --- model versions -------------------------------------------------------------------
    async def ensure_version(self, version: str, dim: int, status: str = "building") -> None:
        """Create the chunk table of a model version (idempotent)."""
        table = chunk_table(version)
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(7111)")
            await conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {t} ("
                    " tenant text NOT NULL, item_id text NOT NULL, chunk_no integer NOT NULL,"
                    " item_version bigint NOT NULL,"
                    " metadata jsonb NOT NULL DEFAULT '{{}}', embedding vector({dim}) NOT NULL,"
                    " PRIMARY KEY (tenant, item_id, chunk_no))"
                ).format(t=table, dim=sql.Literal(dim))
            )
            await conn.execute(
                sql.SQL(
                    "CREATE INDEX IF NOT EXISTS {i} ON {t} USING hnsw (embedding vector_cosine_ops)"
                ).format(i=sql.Identifier(f"chunks_v{version}_hnsw"), t=table)
            )
            await conn.execute(
                "INSERT INTO model_versions (version, dim, status) VALUES (%s, %s, %s) "
                "ON CONFLICT (version) DO NOTHING",
                (version, dim, status),
            )

    async def activate(self, version: str) -> str | None:
        """Point search at `version` atomically; returns the previously active version."""
        async with self.pool.connection() as conn, conn.transaction():
            row = await (await conn.execute(
                "SELECT version FROM active_model WHERE singleton FOR UPDATE"
            )).fetchone()
            previous = row[0] if row else None
            exists = await (await conn.execute(
                "SELECT 1 FROM model_versions WHERE version = %s", (version,)
            )).fetchone()
            if exists is None:
                raise KeyError(f"model version {version} has no index")
            await conn.execute(
                "INSERT INTO active_model (singleton, version) VALUES (true, %s) "
                "ON CONFLICT (singleton) DO UPDATE SET version = EXCLUDED.version",
                (version,),
            )
            await conn.execute(
                "UPDATE model_versions SET status = 'active', activated_at = now() WHERE version = %s",
                (version,),
            )
            if previous is not None and previous != version:
                await conn.execute(
                    "UPDATE model_versions SET status = 'retired', retired_at = now() WHERE version = %s",
                    (previous,),
                )
        return previous

    async def active_version(self) -> str | None:
        async with self.pool.connection() as conn:
            row = await (await conn.execute("SELECT version FROM active_model")).fetchone()
        return row[0] if row else None

    async def writable_versions(self) -> list[str]:
        """Every version new content is written to: the active one, those being built, and the
        rollback target (the version retired last: the one active before the current one, or
        one completed since without being activated), so that a rollback switches to a
        complete index at once."""
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(
                "SELECT version FROM model_versions WHERE status IN ('active', 'building') "
                "OR version = (SELECT version FROM model_versions WHERE status = 'retired' "
                "  ORDER BY coalesce(retired_at, activated_at, created_at) DESC, version::bigint DESC "
                "  LIMIT 1) "
                "ORDER BY version::bigint"
            )).fetchall()
        return [row[0] for row in rows]

    async def finish_version(self, version: str) -> None:
        """Mark a fully built version complete without serving it (status retired)."""
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE model_versions SET status = 'retired', retired_at = now() "
                "WHERE version = %s AND status = 'building'",
                (version,),
            )

    async def dimensions(self) -> dict[str, int]:
        return {row["version"]: row["dim"] for row in await self.list_versions()}

    async def list_versions(self) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT version, dim, status, created_at, activated_at FROM model_versions "
                "ORDER BY version::bigint"
            )
            names = [d.name for d in cur.description or []]
            return [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]

    # --- writes ------------------------------------------------------------------------------
    async def pending(
        self, wanted: dict[tuple[str, str], int], versions: Sequence[str]
    ) -> dict[str, set[tuple[str, str]]]:
        """For each model version, the (tenant, id) keys whose chunks need embedding: the event's
        item version is not older than the stored item and newer than the stored chunks."""
        async with self.pool.connection() as conn, conn.cursor() as cur:
            return {version: await self._pending_in(cur, wanted, version) for version in versions}

    async def apply(
        self,
        upserts: dict[str, list[ChunkVectors]],
        deletes: Sequence[tuple[str, str]],
    ) -> int:
        with DB_WRITE_SECONDS.time(), _tracer.start_as_current_span(
            "pgvector write", kind=SpanKind.CLIENT,
            attributes={"db.system": "postgresql", "deletes": len(deletes),
                        "versions": ",".join(upserts)},
        ):
            return await self._apply(upserts, deletes)

    async def _apply(
        self,
        upserts: dict[str, list[ChunkVectors]],
        deletes: Sequence[tuple[str, str]],
    ) -> int:
        items = {(c.item.tenant, c.item.id): c.item for chunks in upserts.values() for c in chunks}
        changed = 0
        async with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            for item in items.values():
                await cur.execute(
                    "INSERT INTO items (tenant, id, title, text, metadata, version) "
                    "VALUES (%s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (tenant, id) DO UPDATE SET title = EXCLUDED.title, "
                    " text = EXCLUDED.text, metadata = EXCLUDED.metadata, "
                    " version = EXCLUDED.version, updated_at = now() "
                    "WHERE items.version < EXCLUDED.version",
                    (item.tenant, item.id, item.title, item.text, Jsonb(item.metadata), item.version),
                )
                changed += cur.rowcount
            for version, chunk_sets in upserts.items():
                # Decided again inside the transaction, so a concurrent writer of a newer
                # version wins and a replayed or stale event changes nothing.
                wanted = {(c.item.tenant, c.item.id): c.item.version for c in chunk_sets}
                due = await self._pending_in(cur, wanted, version)
                mine = [c for c in chunk_sets if (c.item.tenant, c.item.id) in due]
                if not mine:
                    continue
                table = chunk_table(version)
                await self._delete_chunks(cur, table, [(c.item.tenant, c.item.id) for c in mine])
                async with cur.copy(
                    sql.SQL(
                        "COPY {t} (tenant, item_id, chunk_no, item_version, metadata, embedding) "
                        "FROM STDIN WITH (FORMAT BINARY)"
                    ).format(t=table)
                ) as copy:
                    copy.set_types(["text", "text", "int4", "int8", "jsonb", "vector"])
                    for chunks in mine:
                        for number, vector in enumerate(chunks.vectors):
                            await copy.write_row((
                                chunks.item.tenant, chunks.item.id, number, chunks.item.version,
                                Jsonb(chunks.item.metadata), np.asarray(vector, dtype=np.float32),
                            ))
            if deletes:
                versions = [r[0] for r in await (await cur.execute(
                    "SELECT version FROM model_versions")).fetchall()]
                for version in versions:
                    await self._delete_chunks(cur, chunk_table(version), list(deletes))
                await cur.execute(
                    "DELETE FROM items WHERE (tenant, id) IN "
                    "(SELECT * FROM unnest(%s::text[], %s::text[]))",
                    ([t for t, _ in deletes], [i for _, i in deletes]),
                )
                changed += cur.rowcount
        return changed

    # --- reindex support ---------------------------------------------------------------------
    async def item_versions(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """The stored version of each (tenant, id) that exists."""
        if not keys:
            return {}
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(
                "SELECT i.tenant, i.id, i.version FROM items i "
                "JOIN unnest(%s::text[], %s::text[]) AS k(tenant, id) ON i.tenant = k.tenant AND i.id = k.id",
                ([t for t, _ in keys], [i for _, i in keys]),
            )).fetchall()
        return {(row[0], row[1]): int(row[2]) for row in rows}

    async def missing_items(self, version: str, limit: int = 256) -> list[Item]:
        """Items whose chunks in `version` are missing or older than the item."""
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(
                sql.SQL(
                    "SELECT i.tenant, i.id, i.title, i.text, i.metadata, i.version FROM items i "
                    "WHERE NOT EXISTS (SELECT 1 FROM {t} c WHERE c.tenant = i.tenant "
                    " AND c.item_id = i.id AND c.item_version >= i.version) "
                    "ORDER BY i.tenant, i.id LIMIT %s"
                ).format(t=chunk_table(version)),
                (limit,),
            )).fetchall()
        return [Item(row[0], row[1], row[2], row[3], dict(row[4]), int(row[5])) for row in rows]

    async def delete_orphans(self, version: str) -> int:
        """Drop chunks of `version` whose item no longer exists; returns rows deleted."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                sql.SQL(
                    "DELETE FROM {t} c WHERE NOT EXISTS "
                    "(SELECT 1 FROM items i WHERE i.tenant = c.tenant AND i.id = c.item_id)"
                ).format(t=chunk_table(version))
            )
            return cur.rowcount

    @staticmethod
    async def _pending_in(cur: Any, wanted: dict[tuple[str, str], int], version: str) -> set[tuple[str, str]]:
        keys = list(wanted)
        await cur.execute(
            sql.SQL(
                "SELECT k.tenant, k.id, i.version, "
                " (SELECT max(c.item_version) FROM {t} c WHERE c.tenant = k.tenant AND c.item_id = k.id) "
                "FROM unnest(%s::text[], %s::text[]) AS k(tenant, id) "
                "LEFT JOIN items i ON i.tenant = k.tenant AND i.id = k.id"
            ).format(t=chunk_table(version)),
            ([t for t, _ in keys], [i for _, i in keys]),
        )
        due = set()
        for tenant, item_id, stored, embedded in await cur.fetchall():
            version_wanted = wanted[(tenant, item_id)]
            if version_wanted >= (stored or 0) and version_wanted > (embedded or 0):
                due.add((tenant, item_id))
        return due

    @staticmethod
    async def _delete_chunks(cur: Any, table: sql.Identifier, keys: list[tuple[str, str]]) -> None:
        await cur.execute(
            sql.SQL(
                "DELETE FROM {t} WHERE (tenant, item_id) IN "
                "(SELECT * FROM unnest(%s::text[], %s::text[]))"
            ).format(t=table),
            ([t for t, _ in keys], [i for _, i in keys]),
        )

    # --- reads -------------------------------------------------------------------------------
    async def vector_search(
        self, version: str, tenant: str, query: np.ndarray, k: int, filters: dict[str, Any]
    ) -> list[tuple[str, float]]:
        """Top-k items by their best chunk; keeps scanning until k items match the filters."""
        table = chunk_table(version)
        limit = max(k * 2, 20)
        query_sql = sql.SQL(
            "SELECT item_id, 1 - (embedding <=> %(q)s) AS score FROM {t} "
            "WHERE tenant = %(tenant)s AND metadata @> %(filters)s "
            "ORDER BY embedding <=> %(q)s LIMIT %(limit)s"
        ).format(t=table)
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SET LOCAL hnsw.iterative_scan = strict_order")
            while True:
                await conn.execute(
                    sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(min(max(limit, 40), 1000)))
                )
                rows = await (await conn.execute(query_sql, {
                    "q": np.asarray(query, dtype=np.float32), "tenant": tenant,
                    "filters": Jsonb(filters), "limit": limit,
                })).fetchall()
                best: dict[str, float] = {}
                for item_id, score in rows:
                    best.setdefault(item_id, float(score))
                if len(best) >= k or len(rows) < limit:
                    break
                limit *= 4
        return sorted(best.items(), key=lambda pair: -pair[1])[:k]

    async def text_search(
        self, tenant: str, query: str, k: int, filters: dict[str, Any]
    ) -> list[tuple[str, float]]:
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(
                "SELECT id, ts_rank_cd(tsv, q) AS rank FROM items, websearch_to_tsquery('english', %s) q "
                "WHERE tenant = %s AND metadata @> %s AND tsv @@ q ORDER BY rank DESC, id LIMIT %s",
                (query, tenant, Jsonb(filters), k),
            )).fetchall()
        return [(row[0], float(row[1])) for row in rows]

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

    async def count_items(self, tenant: str | None = None) -> int:
        async with self.pool.connection() as conn:
            if tenant is None:
                row = await (await conn.execute("SELECT count(*) FROM items")).fetchone()
            else:
                row = await (await conn.execute(
                    "SELECT count(*) FROM items WHERE tenant = %s", (tenant,))).fetchone()
        return int(row[0]) if row else 0


def reciprocal_rank_fusion(*rankings: list[tuple[str, float]], k: int = RRF_K) -> list[tuple[str, float]]:
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, (item_id, _) in enumerate(ranking, start=1):
            scores[item_id] = scores.get(item_id, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))
