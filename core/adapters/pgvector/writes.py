"""Writes: items and their chunks per model version, guarded by the item's version so that a
replayed or stale event changes nothing; and what a reindex needs to fill a version (stored
item versions, items missing from a version, chunks of deleted items)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from psycopg import sql
from psycopg.types.json import Jsonb

from core.adapters.pgvector.base import PoolBound
from core.adapters.pgvector.schema import chunk_table
from core.domain import ChunkVectors, Item
from core.metrics import DB_WRITE_SECONDS

_tracer = trace.get_tracer("flywheel.vector_store")


class Writes(PoolBound):
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
                    "SELECT %(tenant)s, %(id)s, %(title)s, %(text)s, %(metadata)s, %(version)s "
                    "WHERE NOT EXISTS (SELECT 1 FROM deleted_items d WHERE d.tenant = %(tenant)s "
                    " AND d.id = %(id)s AND d.version >= %(version)s) "
                    "ON CONFLICT (tenant, id) DO UPDATE SET title = EXCLUDED.title, "
                    " text = EXCLUDED.text, metadata = EXCLUDED.metadata, "
                    " version = EXCLUDED.version, updated_at = now() "
                    "WHERE items.version < EXCLUDED.version",
                    {"tenant": item.tenant, "id": item.id, "title": item.title, "text": item.text,
                     "metadata": Jsonb(item.metadata), "version": item.version},
                )
                changed += cur.rowcount
                if cur.rowcount:  # created again, newer than its delete
                    await cur.execute(
                        "DELETE FROM deleted_items WHERE tenant = %s AND id = %s AND version < %s",
                        (item.tenant, item.id, item.version))
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
                keys = ([t for t, _ in deletes], [i for _, i in deletes])
                await cur.execute(
                    "INSERT INTO deleted_items (tenant, id, version) "
                    "SELECT tenant, id, version FROM items WHERE (tenant, id) IN "
                    "(SELECT * FROM unnest(%s::text[], %s::text[])) "
                    "ON CONFLICT (tenant, id) DO UPDATE SET "
                    " version = GREATEST(deleted_items.version, EXCLUDED.version), deleted_at = now()",
                    keys,
                )
                await cur.execute(
                    "DELETE FROM items WHERE (tenant, id) IN "
                    "(SELECT * FROM unnest(%s::text[], %s::text[]))",
                    keys,
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

    async def missing_items(self, version: str, limit: int = 256, tenant: str | None = None) -> list[Item]:
        """Items (of `tenant`, if given) whose chunks in `version` are missing or older than the item."""
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(
                sql.SQL(
                    "SELECT i.tenant, i.id, i.title, i.text, i.metadata, i.version FROM items i "
                    "WHERE (%(tenant)s::text IS NULL OR i.tenant = %(tenant)s) "
                    " AND NOT EXISTS (SELECT 1 FROM {t} c WHERE c.tenant = i.tenant "
                    " AND c.item_id = i.id AND c.item_version >= i.version) "
                    "ORDER BY i.tenant, i.id LIMIT %(limit)s"
                ).format(t=chunk_table(version)),
                {"tenant": tenant, "limit": limit},
            )).fetchall()
        return [Item(row[0], row[1], row[2], row[3], dict(row[4]), int(row[5])) for row in rows]

    async def delete_orphans(self, version: str, tenant: str | None = None) -> int:
        """Drop chunks (of `tenant`, if given) of `version` whose item no longer exists; returns
        rows deleted."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                sql.SQL(
                    "DELETE FROM {t} c WHERE (%s::text IS NULL OR c.tenant = %s) AND NOT EXISTS "
                    "(SELECT 1 FROM items i WHERE i.tenant = c.tenant AND i.id = c.item_id)"
                ).format(t=chunk_table(version)), (tenant, tenant),
            )
            return cur.rowcount

    @staticmethod
    async def _pending_in(cur: Any, wanted: dict[tuple[str, str], int], version: str) -> set[tuple[str, str]]:
        keys = list(wanted)
        await cur.execute(
            sql.SQL(
                "SELECT k.tenant, k.id, i.version, d.version, "
                " (SELECT max(c.item_version) FROM {t} c WHERE c.tenant = k.tenant AND c.item_id = k.id) "
                "FROM unnest(%s::text[], %s::text[]) AS k(tenant, id) "
                "LEFT JOIN items i ON i.tenant = k.tenant AND i.id = k.id "
                "LEFT JOIN deleted_items d ON d.tenant = k.tenant AND d.id = k.id"
            ).format(t=chunk_table(version)),
            ([t for t, _ in keys], [i for _, i in keys]),
        )
        due = set()
        for tenant, item_id, stored, deleted, embedded in await cur.fetchall():
            version_wanted = wanted[(tenant, item_id)]
            if version_wanted >= (stored or 0) and version_wanted > max(embedded or 0, deleted or 0):
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
