"""The lifecycle of model versions: a chunk table per version (status building), the switch
of the active pointer that search follows, completion without activation (retired), failure
(failed, with the reason), and the versions new content is written to.

Every change takes the rollout lock and, when the caller says what state it decided from
(core.domain.Expected), compares it with the state under the lock in the same transaction: a
stale change raises ConcurrentChange and applies nothing. A change that makes the A/B split's
candidate stop receiving new content ends the split in the same transaction, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from core.adapters.pgvector.base import PoolBound
from core.adapters.pgvector.schema import ROLLOUT_LOCK, chunk_table_ddl
from core.domain import ConcurrentChange, Expected

_STATE_SQL = (
    "SELECT v.version, v.status, "
    " v.version = (SELECT r.version FROM model_versions r WHERE r.status = 'retired' "
    "   ORDER BY coalesce(r.retired_at, r.activated_at, r.created_at) DESC, r.version::bigint DESC "
    "   LIMIT 1) AS rollback_target, "
    " v.version = (SELECT a.version FROM active_model a) AS active "
    "FROM model_versions v ORDER BY v.version::bigint"
)


@dataclass(frozen=True)
class RolloutState:
    """Model versions with their status, the active one, and the rollback target (the version
    retired last: the one active before the current one, or one completed since without being
    activated)."""

    status: dict[str, str]
    active: str | None
    rollback_target: str | None

    def writable(self) -> list[str]:
        """Every version new content is written to: the active one, those being built, and the
        rollback target, so that a rollback switches to a complete index at once."""
        return [v for v, s in self.status.items()
                if s in ("active", "building") or v == self.rollback_target]


async def read_state(conn: AsyncConnection[Any]) -> RolloutState:
    rows = await (await conn.execute(_STATE_SQL)).fetchall()
    return RolloutState(
        status={row[0]: row[1] for row in rows},
        active=next((row[0] for row in rows if row[3]), None),
        rollback_target=next((row[0] for row in rows if row[2]), None),
    )


async def lock_state(conn: AsyncConnection[Any]) -> RolloutState:
    """Take the rollout lock (until the transaction ends) and read the state under it."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (ROLLOUT_LOCK,))
    return await read_state(conn)


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


async def end_stale_split(conn: AsyncConnection[Any], cause: str) -> str | None:
    """End the A/B split if its candidate no longer receives new content; the reason recorded."""
    row = await (await conn.execute(
        "SELECT candidate_version FROM ab_split WHERE ended_at IS NULL")).fetchone()
    if row is None:
        return None
    candidate = row[0]
    if candidate in (await read_state(conn)).writable():
        return None
    reason = (f"ended automatically: candidate version {candidate} stopped receiving new content "
              f"when {cause}, so its index would miss items")
    await conn.execute("UPDATE ab_split SET ended_at = now(), end_reason = %s WHERE ended_at IS NULL",
                       (reason,))
    return reason


class VersionLifecycle(PoolBound):
    async def ensure_version(self, version: str, dim: int, status: str = "building") -> None:
        """Create the chunk table of a model version (idempotent); a version whose reindex failed
        is building again (its retried reindex resumes and reconciles what it missed)."""
        statements = chunk_table_ddl(version, dim)
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(7111)")
            for statement in statements:
                await conn.execute(statement)
            await lock_state(conn)
            await conn.execute(
                "INSERT INTO model_versions (version, dim, status) VALUES (%s, %s, %s) "
                "ON CONFLICT (version) DO UPDATE SET status = 'building', reason = NULL "
                "WHERE model_versions.status = 'failed'",
                (version, dim, status),
            )

    async def activate(self, version: str, expected: Expected | None = None) -> str | None:
        """Point search at `version` atomically; returns the previously active version.

        With `expected`, a compare-and-set: applied only if the state still is what the
        activation was decided from (else ConcurrentChange); activating the version already
        active changes nothing.
        """
        async with self.pool.connection() as conn, conn.transaction():
            state = await lock_state(conn)
            previous = state.active
            if version not in state.status:
                raise KeyError(f"model version {version} has no index")
            if expected is not None:
                if previous == version:
                    return previous
                check_expected(state, version, expected, f"the activation of version {version}")
            await conn.execute(
                "INSERT INTO active_model (singleton, version) VALUES (true, %s) "
                "ON CONFLICT (singleton) DO UPDATE SET version = EXCLUDED.version",
                (version,),
            )
            await conn.execute(
                "UPDATE model_versions SET status = 'active', activated_at = now(), reason = NULL "
                "WHERE version = %s",
                (version,),
            )
            if previous is not None and previous != version:
                await conn.execute(
                    "UPDATE model_versions SET status = 'retired', retired_at = now() WHERE version = %s",
                    (previous,),
                )
            await end_stale_split(conn, f"version {version} was activated")
        return previous

    async def active_version(self) -> str | None:
        async with self.pool.connection() as conn:
            row = await (await conn.execute("SELECT version FROM active_model")).fetchone()
        return row[0] if row else None

    async def rollout_state(self) -> RolloutState:
        async with self.pool.connection() as conn:
            return await read_state(conn)

    async def writable_versions(self) -> list[str]:
        """Every version new content is written to: the active one, those being built, and the
        rollback target (the version retired last: the one active before the current one, or
        one completed since without being activated), so that a rollback switches to a
        complete index at once. Not a failed one."""
        return (await self.rollout_state()).writable()

    async def finish_version(self, version: str) -> None:
        """Mark a fully built version complete without serving it (status retired)."""
        async with self.pool.connection() as conn, conn.transaction():
            await lock_state(conn)
            cur = await conn.execute(
                "UPDATE model_versions SET status = 'retired', retired_at = now() "
                "WHERE version = %s AND status = 'building'",
                (version,),
            )
            if cur.rowcount:
                await end_stale_split(conn, f"version {version} finished reindexing without being "
                                            "activated and became the rollback target")

    async def fail_version(self, version: str, reason: str) -> bool:
        """Mark a version whose reindex failed or was abandoned `failed`, with the reason: no
        content is written to it any more and it cannot be activated. Only a version still being
        built; False otherwise."""
        async with self.pool.connection() as conn, conn.transaction():
            await lock_state(conn)
            cur = await conn.execute(
                "UPDATE model_versions SET status = 'failed', reason = %s "
                "WHERE version = %s AND status = 'building'",
                (reason[:2000], version),
            )
            return cur.rowcount > 0

    async def dimensions(self) -> dict[str, int]:
        return {row["version"]: row["dim"] for row in await self.list_versions()}

    async def list_versions(self) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT version, dim, status, created_at, activated_at, reason FROM model_versions "
                "ORDER BY version::bigint"
            )
            names = [d.name for d in cur.description or []]
            return [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]
