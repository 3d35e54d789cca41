"""The lifecycle of model versions: a chunk table per version (status building), the switch
of the active pointer that search follows, completion without activation (retired), and the
versions new content is written to."""

from __future__ import annotations

from typing import Any

from core.adapters.pgvector.base import PoolBound
from core.adapters.pgvector.schema import chunk_table_ddl


class VersionLifecycle(PoolBound):
    async def ensure_version(self, version: str, dim: int, status: str = "building") -> None:
        """Create the chunk table of a model version (idempotent)."""
        statements = chunk_table_ddl(version, dim)
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(7111)")
            for statement in statements:
                await conn.execute(statement)
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
