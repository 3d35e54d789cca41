"""Keep loaded in Triton only the versions some tenant needs (core.residency), over ports.

Run by the deployer (the one service that writes the model repository) after each rollout
and every `RECONCILE_EVERY_S`: versions no tenant serves, builds, tests in a split or can roll
back to are parked and unloaded; a parked version a tenant needs again (its reindex asks for
it) is restored and loaded, so that the reindex finds it served. A version whose deploy or
reindex is pending, running or ended, or that was placed in the repository, in the last
`PROTECT_S` seconds is kept. Each round also loads any version in the repository Triton does
not serve (a restarted server that started with the base version only, as compose and helm
start it); versions whose load failed are left to their deploy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from core.ports import ModelServer
from core.residency import ResidencyPlan, plan_residency

log = logging.getLogger("flywheel.deployer")

RECONCILE_EVERY_S = 15.0
PROTECT_S = 600.0


async def reconcile(
    server: ModelServer,
    needed: Callable[[], Awaitable[set[str]]],
    in_progress: Callable[[datetime], Awaitable[set[int]]],
    now: datetime | None = None,
) -> ResidencyPlan:
    """Park and restore as planned, then load what changed (the versions serving keep serving)."""
    since = (now or datetime.now(UTC)) - timedelta(seconds=PROTECT_S)
    in_repository = await asyncio.to_thread(server.repository_versions)
    # A version placed moments ago (by a deploy, or by hand) is never moved while Triton loads it.
    placed = await asyncio.to_thread(server.placed_since, since.timestamp())
    plan = plan_residency(in_repository, await asyncio.to_thread(server.parked_versions),
                          await needed(), await in_progress(since) | placed)
    for version in sorted(plan.park):
        await asyncio.to_thread(server.park_version, version)
    for version in sorted(plan.restore):
        await asyncio.to_thread(server.restore_version, version)
    await server.load(retry_failed=False)  # two status calls when nothing changed
    if not plan.changes:
        return plan
    log.info("model versions parked (unloaded): %s; restored (loaded): %s",
             sorted(plan.park) or "none", sorted(plan.restore) or "none")
    return plan
