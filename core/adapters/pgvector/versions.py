"""The lifecycle of model versions, per tenant: a chunk table per version (shared by the
tenants that use it) and, in a tenant's lineage, the version's status (building), the switch
of the tenant's active pointer that its search follows, completion without activation
(retired), failure (failed, with the reason), and the versions its new content is written to.
A tenant without a lineage of its own reads NEW_TENANTS'; its first change copies that.

Every change takes the rollout lock and, when the caller says what state it decided from
(core.domain.Expected), compares it with the state under the lock in the same transaction: a
stale change raises ConcurrentChange and applies nothing. A change that makes the A/B split's
candidate stop receiving new content ends the split in the same transaction, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection, sql

from core.adapters.pgvector.base import PoolBound
from core.adapters.pgvector.schema import ROLLOUT_LOCK, chunk_table, chunk_table_ddl
from core.domain import NEW_TENANTS, ConcurrentChange, Expected

# The tenant's lineage, or NEW_TENANTS' while it has none of its own.
_LINEAGE_SQL = ("SELECT CASE WHEN EXISTS (SELECT 1 FROM tenant_versions WHERE tenant = %(t)s) "
                "OR EXISTS (SELECT 1 FROM tenant_active WHERE tenant = %(t)s) THEN %(t)s ELSE %(new)s END")
_STATE_SQL = (
    "WITH l AS (" + _LINEAGE_SQL + " AS tenant) "
    "SELECT v.version, v.status, "
    " v.version = (SELECT r.version FROM tenant_versions r WHERE r.tenant = (SELECT tenant FROM l) "
    "   AND r.status = 'retired' "
    "   ORDER BY coalesce(r.retired_at, r.activated_at, r.created_at) DESC, r.version::bigint DESC "
    "   LIMIT 1) AS rollback_target, "
    " v.version = (SELECT a.version FROM tenant_active a WHERE a.tenant = (SELECT tenant FROM l)) AS active "
    "FROM tenant_versions v WHERE v.tenant = (SELECT tenant FROM l) ORDER BY v.version::bigint"
)


@dataclass(frozen=True)
class RolloutState:
    """A tenant's model versions with their status, its active one, and its rollback target
    (the version retired last: the one active before the current one, or one completed since
    without being activated)."""

    status: dict[str, str]
    active: str | None
    rollback_target: str | None

    def writable(self) -> list[str]:
        """Every version new content is written to: the active one, those being built, and the
        rollback target, so that a rollback switches to a complete index at once."""
        return [v for v, s in self.status.items()
                if s in ("active", "building") or v == self.rollback_target]

    def kept(self, split_candidate: str | None = None) -> set[str]:
        """The versions the tenant needs served: those it writes, and its split's candidate."""
        return set(self.writable()) | ({split_candidate} if split_candidate else set())


async def read_state(conn: AsyncConnection[Any], tenant: str) -> RolloutState:
    rows = await (await conn.execute(_STATE_SQL, {"t": tenant, "new": NEW_TENANTS})).fetchall()
    return RolloutState(
        status={row[0]: row[1] for row in rows},
        active=next((row[0] for row in rows if row[3]), None),
        rollback_target=next((row[0] for row in rows if row[2]), None),
    )


async def lock_state(conn: AsyncConnection[Any], tenant: str) -> RolloutState:
    """Take the rollout lock (until the transaction ends), give `tenant` a lineage of its own
    (a copy of NEW_TENANTS') if it has none yet, and read its state under the lock."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (ROLLOUT_LOCK,))
    if tenant != NEW_TENANTS:
        await conn.execute(
            "INSERT INTO tenant_versions (tenant, version, status, activated_at) "
            "SELECT %(t)s, a.version, 'active', now() FROM tenant_active a WHERE a.tenant = %(new)s "
            "AND NOT EXISTS (SELECT 1 FROM tenant_versions WHERE tenant = %(t)s) "
            "AND NOT EXISTS (SELECT 1 FROM tenant_active WHERE tenant = %(t)s)",
            {"t": tenant, "new": NEW_TENANTS})
        await conn.execute(
            "INSERT INTO tenant_active (tenant, version) "
            "SELECT %(t)s, a.version FROM tenant_active a WHERE a.tenant = %(new)s "
            "ON CONFLICT (tenant) DO NOTHING",
            {"t": tenant, "new": NEW_TENANTS})
    return await read_state(conn, tenant)


def check_expected(state: RolloutState, version: str, expected: Expected, change: str) -> None:
    """Raise ConcurrentChange unless the state still is what `change` of `version` was decided
    from: the same active version, the same status of `version`, and a retired `version` still
    kept current (the rollback target)."""
    if state.active != expected.active:
        raise ConcurrentChange(
            f"the active version changed from {expected.active} to {state.active} since {change} "
            "was decided; nothing was changed")
    status = state.status.get(version)
    if expected.status is not None and status != expected.status:
        raise ConcurrentChange(
            f"model version {version} changed from {expected.status} to {status} since {change} "
            "was decided; nothing was changed")
    if status == "retired" and version != state.rollback_target:
        raise ConcurrentChange(
            f"model version {version} stopped receiving new content (version {state.rollback_target} "
            f"was retired after it) since {change} was decided; nothing was changed")


async def end_stale_split(conn: AsyncConnection[Any], tenant: str, cause: str) -> str | None:
    """End the tenant's A/B split if its candidate no longer receives new content; the reason
    recorded."""
    row = await (await conn.execute(
        "SELECT candidate_version FROM tenant_ab_split WHERE tenant = %s AND ended_at IS NULL",
        (tenant,))).fetchone()
    if row is None:
        return None
    candidate = row[0]
    if candidate in (await read_state(conn, tenant)).writable():
        return None
    reason = (f"ended automatically: candidate version {candidate} stopped receiving new content "
              f"when {cause}, so its index would miss items")
    await conn.execute("UPDATE tenant_ab_split SET ended_at = now(), end_reason = %s "
                       "WHERE tenant = %s AND ended_at IS NULL", (reason, tenant))
    return reason


class VersionLifecycle(PoolBound):
    """The catalogue of versions (shared) and each tenant's lineage, by tenant."""

    async def ensure_version(self, tenant: str, version: str, dim: int, status: str = "building",
                             owner: str | None = None, fusion_weight: float | None = None) -> None:
        """Create the chunk table of a model version (idempotent) and the version in `tenant`'s
        lineage; a version whose reindex failed is building again (its retried reindex resumes
        and reconciles what it missed). `owner`: the tenant that trained it, if it is new.
        `fusion_weight`: the one its training chose, recorded unless the version has one (a
        version's weight never changes once recorded; a reindex that names none keeps it)."""
        statements = chunk_table_ddl(version, dim)
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(7111)")
            for statement in statements:
                await conn.execute(statement)
            await lock_state(conn, tenant)
            await conn.execute(
                "INSERT INTO model_versions (version, dim, owner, fusion_weight) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (version) DO UPDATE SET fusion_weight = EXCLUDED.fusion_weight "
                "WHERE model_versions.fusion_weight IS NULL AND EXCLUDED.fusion_weight IS NOT NULL",
                (version, dim, owner, fusion_weight))
            await conn.execute(
                "INSERT INTO tenant_versions (tenant, version, status) VALUES (%s, %s, %s) "
                "ON CONFLICT (tenant, version) DO UPDATE SET status = 'building', reason = NULL "
                "WHERE tenant_versions.status = 'failed'",
                (tenant, version, status),
            )

    async def activate(self, tenant: str, version: str, expected: Expected | None = None) -> str | None:
        """Point `tenant`'s search at `version` atomically; returns the previously active version.

        With `expected`, a compare-and-set: applied only if the state still is what the
        activation was decided from (else ConcurrentChange); activating the version already
        active changes nothing.
        """
        async with self.pool.connection() as conn, conn.transaction():
            state = await lock_state(conn, tenant)
            previous = state.active
            if version not in state.status:
                raise KeyError(f"model version {version} has no index for tenant {tenant}")
            if expected is not None:
                if previous == version:
                    return previous
                check_expected(state, version, expected, f"the activation of version {version}")
            await conn.execute(
                "INSERT INTO tenant_active (tenant, version) VALUES (%s, %s) "
                "ON CONFLICT (tenant) DO UPDATE SET version = EXCLUDED.version",
                (tenant, version),
            )
            await conn.execute(
                "UPDATE tenant_versions SET status = 'active', activated_at = now(), reason = NULL "
                "WHERE tenant = %s AND version = %s",
                (tenant, version),
            )
            if previous is not None and previous != version:
                await conn.execute(
                    "UPDATE tenant_versions SET status = 'retired', retired_at = now() "
                    "WHERE tenant = %s AND version = %s",
                    (tenant, previous),
                )
            await end_stale_split(conn, tenant, f"version {version} was activated")
        return previous

    async def active_version(self, tenant: str) -> str | None:
        async with self.pool.connection() as conn:
            return (await read_state(conn, tenant)).active

    async def rollout_state(self, tenant: str) -> RolloutState:
        async with self.pool.connection() as conn:
            return await read_state(conn, tenant)

    async def writable_versions(self, tenant: str) -> list[str]:
        """Every version `tenant`'s new content is written to: its active one, those being built,
        and its rollback target (the version retired last: the one active before the current
        one, or one completed since without being activated), so that a rollback switches to
        a complete index at once. Not a failed one."""
        return (await self.rollout_state(tenant)).writable()

    async def finish_version(self, tenant: str, version: str) -> None:
        """Mark a fully built version complete without serving it (status retired)."""
        async with self.pool.connection() as conn, conn.transaction():
            await lock_state(conn, tenant)
            cur = await conn.execute(
                "UPDATE tenant_versions SET status = 'retired', retired_at = now() "
                "WHERE tenant = %s AND version = %s AND status = 'building'",
                (tenant, version),
            )
            if cur.rowcount:
                await end_stale_split(conn, tenant, f"version {version} finished reindexing without being "
                                                    "activated and became the rollback target")

    async def fail_version(self, tenant: str, version: str, reason: str) -> bool:
        """Mark a version whose reindex failed or was abandoned `failed`, with the reason: none of
        the tenant's content is written to it any more and it cannot be activated; what its
        reindex had written of the tenant's items is dropped (a retry builds it again). Only a
        version still being built; False otherwise."""
        async with self.pool.connection() as conn, conn.transaction():
            await lock_state(conn, tenant)
            cur = await conn.execute(
                "UPDATE tenant_versions SET status = 'failed', reason = %s "
                "WHERE tenant = %s AND version = %s AND status = 'building'",
                (reason[:2000], tenant, version),
            )
            if cur.rowcount == 0:
                return False
            exists = await (await conn.execute("SELECT to_regclass(%s)", (f"chunks_v{version}",))).fetchone()
            if exists and exists[0] is not None:
                await conn.execute(sql.SQL("DELETE FROM {} WHERE tenant = %s").format(chunk_table(version)),
                                   (tenant,))
            return True

    async def dimensions(self) -> dict[str, int]:
        """The vector dimension of every version in the catalogue (any tenant's)."""
        async with self.pool.connection() as conn:
            rows = await (await conn.execute("SELECT version, dim FROM model_versions")).fetchall()
        return {row[0]: int(row[1]) for row in rows}

    async def fusion_weight(self, version: str) -> float | None:
        """The vector share of hybrid search's score its training chose for `version`; None:
        none was chosen (the base model, a version trained before weights were chosen)."""
        async with self.pool.connection() as conn:
            row = await (await conn.execute(
                "SELECT fusion_weight FROM model_versions WHERE version = %s", (version,))).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    async def owners(self) -> dict[str, str | None]:
        """The tenant that trained each version in the catalogue; None: shared."""
        async with self.pool.connection() as conn:
            rows = await (await conn.execute("SELECT version, owner FROM model_versions")).fetchall()
        return {row[0]: row[1] for row in rows}

    async def list_versions(self, tenant: str) -> list[dict[str, Any]]:
        """The versions of `tenant`'s lineage (its own, or NEW_TENANTS' while it has none):
        version, dim, status, created_at, activated_at, reason, `tenant` (the owner, null
        for a shared version) and fusion_weight."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "WITH l AS (" + _LINEAGE_SQL + " AS tenant) "
                "SELECT v.version, m.dim, v.status, v.created_at, v.activated_at, v.reason, "
                " m.owner AS tenant, m.fusion_weight "
                "FROM tenant_versions v JOIN model_versions m ON m.version = v.version "
                "WHERE v.tenant = (SELECT tenant FROM l) ORDER BY v.version::bigint",
                {"t": tenant, "new": NEW_TENANTS},
            )
            names = [d.name for d in cur.description or []]
            return [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]

    async def served_versions(self) -> set[str]:
        """Every version some tenant (or NEW_TENANTS) serves, builds, can roll back to or tests
        in a split: what the model server keeps loaded."""
        async with self.pool.connection() as conn:
            tenants = [row[0] for row in await (await conn.execute(
                "SELECT tenant FROM tenant_versions UNION SELECT tenant FROM tenant_active")).fetchall()]
            splits: dict[str, str] = dict(await (await conn.execute(
                "SELECT tenant, candidate_version FROM tenant_ab_split WHERE ended_at IS NULL")).fetchall())
            kept: set[str] = set()
            for tenant in tenants:
                kept |= (await read_state(conn, tenant)).kept(splits.get(tenant))
        return kept
