"""Each tenant's A/B split in PostgreSQL: one row per tenant (table `tenant_ab_split`, created
with the vector store's schema), read by every gateway. An ended split keeps its row with when
and why it ended; a split is set under the rollout lock, as a compare-and-set on the tenant's
state its candidate was validated against (see core.adapters.pgvector.versions)."""

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

    def for_tenant(self, tenant: str) -> TenantSplits:
        return TenantSplits(self, tenant)

    async def _ensure(self) -> None:
        if not self._ready:
            async with self.pool.connection() as conn:
                await conn.execute("SELECT pg_advisory_xact_lock(7120)")
                await conn.execute(SCHEMA)
            self._ready = True

    async def get_split(self, tenant: str) -> ABSplit | None:
        await self._ensure()
        async with self.pool.connection() as conn:
            row = await (await conn.execute(
                "SELECT candidate_version, percent, updated_at FROM tenant_ab_split "
                "WHERE tenant = %s AND ended_at IS NULL", (tenant,)
            )).fetchone()
        return ABSplit(row[0], float(row[1]), row[2]) if row else None

    async def ended_split(self, tenant: str) -> EndedSplit | None:
        """The tenant's split last ended, with when and why; None while one is in force or none
        ever was."""
        await self._ensure()
        async with self.pool.connection() as conn:
            row = await (await conn.execute(
                "SELECT candidate_version, percent, ended_at, end_reason FROM tenant_ab_split "
                "WHERE tenant = %s AND ended_at IS NOT NULL", (tenant,))).fetchone()
        return EndedSplit(row[0], float(row[1]), row[2], row[3] or "") if row else None

    async def set_split(self, tenant: str, candidate_version: str, percent: float,
                        expected: Expected | None = None) -> ABSplit:
        """Store the tenant's split; with `expected`, only if its active version and the
        candidate's status are still what it was validated against and the candidate still
        receives new content (else core.domain.ConcurrentChange)."""
        await self._ensure()
        async with self.pool.connection() as conn, conn.transaction():
            state = await lock_state(conn, tenant)
            if expected is not None:
                check_expected(state, candidate_version, expected,
                               f"the split to version {candidate_version}")
            row = await (await conn.execute(
                "INSERT INTO tenant_ab_split (tenant, candidate_version, percent) VALUES (%s, %s, %s) "
                "ON CONFLICT (tenant) DO UPDATE SET candidate_version = EXCLUDED.candidate_version, "
                " percent = EXCLUDED.percent, updated_at = now(), ended_at = NULL, end_reason = NULL "
                "RETURNING candidate_version, percent, updated_at",
                (tenant, candidate_version, percent),
            )).fetchone()
        assert row is not None
        return ABSplit(row[0], float(row[1]), row[2])

    async def clear_split(self, tenant: str) -> bool:
        await self._ensure()
        async with self.pool.connection() as conn, conn.transaction():
            await lock_state(conn, tenant)
            cur = await conn.execute(
                "UPDATE tenant_ab_split SET ended_at = now(), end_reason = 'ended by an operator' "
                "WHERE tenant = %s AND ended_at IS NULL", (tenant,))
            return cur.rowcount > 0


class TenantSplits:
    """One tenant's split (core.ports.SplitStore)."""

    def __init__(self, store: PgSplitStore, tenant: str) -> None:
        self.store = store
        self.tenant = tenant

    async def get_split(self) -> ABSplit | None:
        return await self.store.get_split(self.tenant)

    async def ended_split(self) -> EndedSplit | None:
        return await self.store.ended_split(self.tenant)

    async def set_split(self, candidate_version: str, percent: float, expected: Expected | None = None
                        ) -> ABSplit:
        return await self.store.set_split(self.tenant, candidate_version, percent, expected)

    async def clear_split(self) -> bool:
        return await self.store.clear_split(self.tenant)
