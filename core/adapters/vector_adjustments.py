"""The improver's adjustments of stored item vectors, in PostgreSQL beside the chunk tables.

- `item_adjustments(version, tenant, item_id, chunk_no, item_version, original, revision,
  adjusted_at)`: the original vector of every adjusted chunk of a version's index. A row only
  counts while the chunk still has the same `item_version`: when the indexer rewrites an item
  (a newer version of it), the new chunks are fresh embeddings and the old row lapses (it is
  replaced on the next adjustment and ignored by a revert).
- `improver_tenant_state(version, tenant, revision, watermark, metrics)`: per model version and
  tenant, the revision of the tenant's adjustments (bumped by each of its runs that changed
  vectors and by each revert of its items), the session time up to which its clicks were
  applied, and its last run's evaluation. It replaces the global `improver_state` of one row
  per version, migrated in place once: each of its rows goes to the default tenant and to every
  tenant with adjustments in that version.

The vectors themselves are updated in place in `chunks_v<version>`, so search needs no change.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from core.adapters.pgvector import chunk_table
from core.domain import NEW_TENANTS
from core.improver import ChunkState, ChunkUpdate, ImproverState, Key

SCHEMA = """
CREATE TABLE IF NOT EXISTS item_adjustments (
    version text NOT NULL,
    tenant text NOT NULL,
    item_id text NOT NULL,
    chunk_no integer NOT NULL,
    item_version bigint NOT NULL,
    original vector NOT NULL,
    revision bigint NOT NULL,
    adjusted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (version, tenant, item_id, chunk_no)
);
CREATE TABLE IF NOT EXISTS improver_tenant_state (
    version text NOT NULL,
    tenant text NOT NULL,
    revision bigint NOT NULL DEFAULT 0,
    watermark timestamptz,
    metrics jsonb NOT NULL DEFAULT '{}',
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (version, tenant)
);
DO $$ BEGIN
    IF to_regclass('improver_state') IS NOT NULL THEN
        INSERT INTO improver_tenant_state (version, tenant, revision, watermark, metrics, updated_at)
        SELECT s.version, t.tenant, s.revision, s.watermark, s.metrics, s.updated_at
        FROM improver_state s CROSS JOIN LATERAL (
            SELECT 'default' AS tenant
            UNION SELECT DISTINCT a.tenant FROM item_adjustments a WHERE a.version = s.version
        ) t
        ON CONFLICT (version, tenant) DO NOTHING;
        DROP TABLE improver_state;
    END IF;
END $$;
"""


def as_array(value: Any) -> np.ndarray:
    """A pgvector value (numpy array, or pgvector's Vector in binary results) as float32."""
    if hasattr(value, "to_numpy"):
        value = value.to_numpy()
    return np.asarray(value, dtype=np.float32)


class PgVectorAdjustments:
    """Implements core.improver.AdjustmentStore on the pgvector store's connection pool."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self._ready = False

    async def ensure_schema(self) -> None:
        if not self._ready:
            async with self.pool.connection() as conn:
                await conn.execute("SELECT pg_advisory_xact_lock(7121)")
                await conn.execute(SCHEMA)
            self._ready = True

    async def active_version(self, tenant: str) -> str | None:
        """`tenant`'s active version (its own lineage's, else what new tenants serve): the one
        its improver run adjusts."""
        async with self.pool.connection() as conn:
            row = await (await conn.execute(
                "SELECT version FROM tenant_active WHERE tenant IN (%s, %s) "
                "ORDER BY tenant = %s DESC LIMIT 1",
                (tenant, NEW_TENANTS, tenant))).fetchone()
        return row[0] if row else None

    async def improver_state(self, version: str, tenant: str) -> ImproverState:
        await self.ensure_schema()
        async with self.pool.connection() as conn:
            row = await (await conn.execute(
                "SELECT revision, watermark, metrics FROM improver_tenant_state "
                "WHERE version = %s AND tenant = %s", (version, tenant),
            )).fetchone()
        if row is None:
            return ImproverState()
        return ImproverState(int(row[0]), row[1], {k: float(v) for k, v in dict(row[2]).items()})

    async def all_states(self, tenant: str) -> dict[str, dict[str, Any]]:
        """Each version's revision, adjusted chunk count and last metrics for `tenant` (for
        GET /v1/models)."""
        await self.ensure_schema()
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(
                "SELECT s.version, s.revision, s.metrics, s.updated_at, "
                " (SELECT count(*) FROM item_adjustments a WHERE a.version = s.version "
                "  AND a.tenant = s.tenant) "
                "FROM improver_tenant_state s WHERE s.tenant = %s", (tenant,)
            )).fetchall()
        return {r[0]: {"revision": int(r[1]), "metrics": dict(r[2]), "updated_at": r[3],
                       "adjusted_chunks": int(r[4])} for r in rows}

    async def chunk_vectors(self, version: str, keys: Sequence[Key]) -> dict[Key, list[ChunkState]]:
        await self.ensure_schema()
        if not keys:
            return {}
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(
                sql.SQL(
                    "SELECT c.tenant, c.item_id, c.chunk_no, c.item_version, c.embedding, "
                    " CASE WHEN a.item_version = c.item_version THEN a.original END "
                    "FROM {t} c JOIN unnest(%s::text[], %s::text[]) AS k(tenant, id) "
                    " ON c.tenant = k.tenant AND c.item_id = k.id "
                    "LEFT JOIN item_adjustments a ON a.version = %s AND a.tenant = c.tenant "
                    " AND a.item_id = c.item_id AND a.chunk_no = c.chunk_no "
                    "ORDER BY c.tenant, c.item_id, c.chunk_no"
                ).format(t=chunk_table(version)),
                ([t for t, _ in keys], [i for _, i in keys], version),
            )).fetchall()
        result: dict[Key, list[ChunkState]] = {}
        for tenant, item_id, chunk_no, item_version, embedding, original in rows:
            current = as_array(embedding)
            kept = current if original is None else as_array(original)
            result.setdefault((tenant, item_id), []).append(
                ChunkState(int(chunk_no), int(item_version), current, kept))
        return result

    async def commit_run(
        self, version: str, tenant: str, expected_revision: int, updates: Sequence[ChunkUpdate],
        watermark: datetime, metrics: dict[str, float],
    ) -> bool:
        others = sorted({u.tenant for u in updates} - {tenant})
        if others:
            raise ValueError(f"a run of tenant {tenant!r} cannot adjust items of {others}")
        await self.ensure_schema()
        revision = expected_revision + (1 if updates else 0)
        async with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            await cur.execute(
                "INSERT INTO improver_tenant_state (version, tenant) VALUES (%s, %s) "
                "ON CONFLICT (version, tenant) DO NOTHING", (version, tenant),
            )
            await cur.execute(
                "SELECT revision FROM improver_tenant_state WHERE version = %s AND tenant = %s "
                "FOR UPDATE", (version, tenant))
            row = await cur.fetchone()
            if row is None or int(row[0]) != expected_revision:
                return False
            if updates:
                await cur.executemany(
                    "INSERT INTO item_adjustments "
                    " (version, tenant, item_id, chunk_no, item_version, original, revision) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (version, tenant, item_id, chunk_no) DO UPDATE SET "
                    " original = CASE WHEN item_adjustments.item_version = EXCLUDED.item_version "
                    "   THEN item_adjustments.original ELSE EXCLUDED.original END, "
                    " item_version = EXCLUDED.item_version, revision = EXCLUDED.revision, "
                    " adjusted_at = now()",
                    [(version, u.tenant, u.item_id, u.chunk_no, u.item_version,
                      np.asarray(u.original, dtype=np.float32), revision) for u in updates],
                )
                # Only over the same item version: a concurrent rewrite by the indexer wins.
                await cur.executemany(
                    sql.SQL(
                        "UPDATE {t} SET embedding = %s WHERE tenant = %s AND item_id = %s "
                        "AND chunk_no = %s AND item_version = %s"
                    ).format(t=chunk_table(version)),
                    [(np.asarray(u.vector, dtype=np.float32), u.tenant, u.item_id, u.chunk_no,
                      u.item_version) for u in updates],
                )
            await cur.execute(
                "UPDATE improver_tenant_state SET revision = %s, watermark = %s, metrics = %s, "
                " updated_at = now() WHERE version = %s AND tenant = %s",
                (revision, watermark, Jsonb(metrics), version, tenant),
            )
        return True

    async def revert(self, version: str, tenant: str | None = None) -> int:
        """Restore the originals of `version` (where the chunk is still the one adjusted), of
        `tenant`'s items only when given (a tenant undoes its own adjustments, never another's),
        drop those adjustments and bump the revision of each tenant concerned (every tenant's,
        when no tenant is given). The watermark stays: clicks already applied are not applied
        again."""
        mine = sql.SQL(" AND a.tenant = %(tenant)s") if tenant is not None else sql.SQL("")
        states = sql.SQL(" AND s.tenant = %(tenant)s") if tenant is not None else sql.SQL("")
        await self.ensure_schema()
        async with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            if tenant is not None:
                await cur.execute(
                    "INSERT INTO improver_tenant_state (version, tenant) VALUES (%s, %s) "
                    "ON CONFLICT (version, tenant) DO NOTHING", (version, tenant))
            await cur.execute(
                sql.SQL("SELECT s.tenant FROM improver_tenant_state s WHERE s.version = %(version)s"
                        "{states} ORDER BY s.tenant FOR UPDATE").format(states=states),
                {"version": version, "tenant": tenant})
            await cur.execute(
                sql.SQL(
                    "SELECT a.tenant, count(*) FROM {t} c JOIN item_adjustments a "
                    "ON a.version = %(version)s AND c.tenant = a.tenant AND c.item_id = a.item_id "
                    "AND c.chunk_no = a.chunk_no AND c.item_version = a.item_version{mine} "
                    "GROUP BY a.tenant"
                ).format(t=chunk_table(version), mine=mine),
                {"version": version, "tenant": tenant})
            restored_of = {str(r[0]): int(r[1]) for r in await cur.fetchall()}
            await cur.execute(
                sql.SQL(
                    "UPDATE {t} c SET embedding = a.original FROM item_adjustments a "
                    "WHERE a.version = %(version)s AND c.tenant = a.tenant AND c.item_id = a.item_id "
                    "AND c.chunk_no = a.chunk_no AND c.item_version = a.item_version{mine}"
                ).format(t=chunk_table(version), mine=mine),
                {"version": version, "tenant": tenant},
            )
            restored = cur.rowcount
            await cur.execute(
                sql.SQL("DELETE FROM item_adjustments a WHERE a.version = %(version)s{mine}").format(
                    mine=mine),
                {"version": version, "tenant": tenant})
            await cur.execute(
                sql.SQL(
                    "UPDATE improver_tenant_state s SET revision = revision + 1, "
                    " metrics = jsonb_build_object('revision', revision + 1, 'reverted_chunks', "
                    "  COALESCE((%(restored)s::jsonb ->> s.tenant)::int, 0)), "
                    " updated_at = now() WHERE s.version = %(version)s{states}"
                ).format(states=states),
                {"version": version, "tenant": tenant, "restored": Jsonb(restored_of)},
            )
        return restored
