"""The A/B split configuration in PostgreSQL: one row (table `ab_split`), read by every gateway."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from core.ab import ABSplit

SCHEMA = """
CREATE TABLE IF NOT EXISTS ab_split (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    candidate_version text NOT NULL,
    percent double precision NOT NULL CHECK (percent >= 0 AND percent <= 100),
    updated_at timestamptz NOT NULL DEFAULT now()
);
"""


class PgSplitStore:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self._ready = False

    async def _ensure(self) -> None:
        if not self._ready:
            async with self.pool.connection() as conn:
                await conn.execute("SELECT pg_advisory_xact_lock(7120)")
                await conn.execute(SCHEMA)
            self._ready = True

    async def get_split(self) -> ABSplit | None:
        await self._ensure()
        async with self.pool.connection() as conn:
            row = await (await conn.execute(
                "SELECT candidate_version, percent, updated_at FROM ab_split")).fetchone()
        return ABSplit(row[0], float(row[1]), row[2]) if row else None

    async def set_split(self, candidate_version: str, percent: float) -> ABSplit:
        await self._ensure()
        async with self.pool.connection() as conn:
            row = await (await conn.execute(
                "INSERT INTO ab_split (singleton, candidate_version, percent) VALUES (true, %s, %s) "
                "ON CONFLICT (singleton) DO UPDATE SET candidate_version = EXCLUDED.candidate_version, "
                " percent = EXCLUDED.percent, updated_at = now() "
                "RETURNING candidate_version, percent, updated_at",
                (candidate_version, percent),
            )).fetchone()
        assert row is not None
        return ABSplit(row[0], float(row[1]), row[2])

    async def clear_split(self) -> bool:
        await self._ensure()
        async with self.pool.connection() as conn:
            cur = await conn.execute("DELETE FROM ab_split")
            return cur.rowcount > 0
