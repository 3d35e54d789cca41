"""The A/B split configuration in PostgreSQL: one row (table `ab_split`, created with the
vector store's schema), read by every gateway. An ended split keeps its row with when and why
it ended; a split is set under the rollout lock, as a compare-and-set on the state its
candidate was validated against (see core.adapters.pgvector.versions)."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from core.ab import ABSplit, EndedSplit
from core.adapters.pgvector.schema import SPLIT_SCHEMA
from core.adapters.pgvector.versions import check_expected, lock_state
from core.domain import Expected

SCHEMA = SPLIT_SCHEMA


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
                "SELECT candidate_version, percent, updated_at FROM ab_split WHERE ended_at IS NULL"
            )).fetchone()
        return ABSplit(row[0], float(row[1]), row[2]) if row else None

    async def ended_split(self) -> EndedSplit | None:
        """The split last ended, with when and why; None while one is in force or none ever was."""
        await self._ensure()
        async with self.pool.connection() as conn:
            row = await (await conn.execute(
                "SELECT candidate_version, percent, ended_at, end_reason FROM ab_split "
                "WHERE ended_at IS NOT NULL")).fetchone()
        return EndedSplit(row[0], float(row[1]), row[2], row[3] or "") if row else None

    async def set_split(self, candidate_version: str, percent: float, expected: Expected | None = None
                        ) -> ABSplit:
        """Store the split; with `expected`, only if the active version and the candidate's status
        are still what it was validated against and the candidate still receives new content
        (else core.domain.ConcurrentChange)."""
        await self._ensure()
        async with self.pool.connection() as conn, conn.transaction():
            state = await lock_state(conn)
            if expected is not None:
                check_expected(state, candidate_version, expected,
                               f"the split to version {candidate_version}")
            row = await (await conn.execute(
                "INSERT INTO ab_split (singleton, candidate_version, percent) VALUES (true, %s, %s) "
                "ON CONFLICT (singleton) DO UPDATE SET candidate_version = EXCLUDED.candidate_version, "
                " percent = EXCLUDED.percent, updated_at = now(), ended_at = NULL, end_reason = NULL "
                "RETURNING candidate_version, percent, updated_at",
                (candidate_version, percent),
            )).fetchone()
        assert row is not None
        return ABSplit(row[0], float(row[1]), row[2])

    async def clear_split(self) -> bool:
        await self._ensure()
        async with self.pool.connection() as conn, conn.transaction():
            await lock_state(conn)
            cur = await conn.execute(
                "UPDATE ab_split SET ended_at = now(), end_reason = 'ended by an operator' "
                "WHERE ended_at IS NULL")
            return cur.rowcount > 0
