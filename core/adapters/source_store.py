"""Where the platform keeps its sources (a table in its own PostgreSQL database), and what it
asks of a source's PostgreSQL database (is it ready for logical replication; drop the
replication slot and publication of a removed source)."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from core.sources import SourceError, SourceSpec, parse_dsn, slot_name

SCHEMA = """
CREATE TABLE IF NOT EXISTS content_sources (
    name text PRIMARY KEY,
    tenant text NOT NULL,
    spec jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
"""


class PgSourceStore:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._ready = False

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True, connect_timeout=10)
        if not self._ready:
            await conn.execute(SCHEMA)
            self._ready = True
        return conn

    async def close(self) -> None:
        """Nothing is held between calls."""

    async def add(self, spec: SourceSpec) -> bool:
        """Store `spec`; False when a source of that name exists already."""
        async with await self._connect() as conn:
            cur = await conn.execute(
                "INSERT INTO content_sources (name, tenant, spec) VALUES (%s, %s, %s) "
                "ON CONFLICT (name) DO NOTHING",
                (spec.name, spec.tenant, Jsonb(spec.model_dump(mode="json", exclude={"created_at"}))),
            )
            return cur.rowcount == 1

    async def get(self, name: str) -> SourceSpec | None:
        async with await self._connect() as conn:
            conn.row_factory = dict_row  # type: ignore[assignment]
            row = await (await conn.execute(
                "SELECT spec, created_at FROM content_sources WHERE name = %s", (name,))).fetchone()
        return None if row is None else SourceSpec(**row["spec"], created_at=row["created_at"])

    async def list_sources(self, tenant: str | None = None) -> list[SourceSpec]:
        async with await self._connect() as conn:
            conn.row_factory = dict_row  # type: ignore[assignment]
            rows = await (await conn.execute(
                "SELECT spec, created_at FROM content_sources "
                "WHERE %(tenant)s::text IS NULL OR tenant = %(tenant)s ORDER BY name",
                {"tenant": tenant})).fetchall()
        return [SourceSpec(**row["spec"], created_at=row["created_at"]) for row in rows]

    async def remove(self, name: str) -> bool:
        async with await self._connect() as conn:
            cur = await conn.execute("DELETE FROM content_sources WHERE name = %s", (name,))
            return cur.rowcount == 1

    async def item_ids(self, tenant: str, source: str, metadata_key: str) -> list[str]:
        """The ids of the items a source wrote (they carry its name in their metadata)."""
        async with await self._connect() as conn:
            rows = await (await conn.execute(
                "SELECT id FROM items WHERE tenant = %s AND metadata ->> %s = %s ORDER BY id",
                (tenant, metadata_key, source))).fetchall()
        return [row[0] for row in rows]


class PgSourceDatabase:
    """A source's own PostgreSQL database, reached with the source's DSN."""

    async def check(self, spec: SourceSpec) -> None:
        """Raise SourceError saying what to fix when the database cannot be captured as asked."""
        if spec.kind != "postgres":
            return  # MySQL sources are checked by the connector itself
        schema, table = spec.table.split(".")
        try:
            async with await psycopg.AsyncConnection.connect(
                spec.dsn, autocommit=True, connect_timeout=10,
            ) as conn:
                wal = await (await conn.execute("SHOW wal_level")).fetchone()
                rows = await (await conn.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = %s AND table_name = %s", (schema, table))).fetchall()
                replication = await (await conn.execute(
                    "SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user",
                )).fetchone()
        except psycopg.Error as error:
            raise SourceError(f"cannot connect with the source's dsn: {error}".strip()) from error
        if not wal or wal[0] != "logical":
            raise SourceError(f"the database runs with wal_level={wal[0] if wal else '?'}; set "
                              "wal_level=logical (postgresql.conf) and restart it")
        if not replication or not replication[0]:
            raise SourceError(f"user {parse_dsn(spec.dsn, spec.kind).user!r} lacks the REPLICATION "
                              "attribute: ALTER ROLE ... WITH REPLICATION")
        columns = {row[0] for row in rows}
        if not columns:
            raise SourceError(f"table {spec.table} does not exist in that database")
        wanted = [spec.id_column, spec.title_column, spec.version_column, *spec.text_columns,
                  *spec.metadata_columns]
        missing = sorted({c for c in wanted if c is not None and c not in columns})
        if missing:
            raise SourceError(f"table {spec.table} has no column(s) {', '.join(missing)}; "
                              f"it has {', '.join(sorted(columns))}")

    async def forget(self, spec: SourceSpec, attempts: int = 20) -> None:
        """Drop the source's replication slot (which otherwise keeps WAL forever) and publication."""
        if spec.kind != "postgres":
            return
        slot = slot_name(spec.name)
        async with await psycopg.AsyncConnection.connect(
            spec.dsn, autocommit=True, connect_timeout=10,
        ) as conn:
            for _ in range(attempts):  # the connector's task may hold the slot a moment longer
                try:
                    await conn.execute(
                        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                        "WHERE slot_name = %s", (slot,))
                    break
                except psycopg.errors.ObjectInUse:
                    await asyncio.sleep(0.5)
            await conn.execute(f'DROP PUBLICATION IF EXISTS "{slot}"')
