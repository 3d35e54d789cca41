"""The reindexer service: reindex-requested -> backfill a version's index for the requesting
tenant (its items only) -> switch that tenant's search to it.

Run: `uvicorn consumers.reindexer.app:app`. The request's offset is committed when the
reindex has finished (or failed for good), so a crash mid-backfill redelivers it and the
backfill resumes from its replay group's committed offsets. Infrastructure failures
(Triton, PostgreSQL, Kafka, MongoDB down) are retried (consumers.service).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

from consumers.reindexer.handlers import ReindexDeps, ReplaySource, reindex, task_id
from consumers.reindexer.replay import open_replay
from consumers.service import BeatingTasks, ConsumerService, ServiceContext
from core.adapters.pgvector import PgVectorStore
from core.bootstrap import build_chunker, build_embedder, build_store, build_task_store
from schemas.envelope import DEFAULT_TENANT
from schemas.reindex import ReindexRequested
from schemas.topics import CONTENT_UPSERTED, REINDEX_REQUESTED


@dataclass(frozen=True)
class Reindexer:
    """What every reindex shares; each request acts on its tenant's view of the store."""

    deps: ReindexDeps
    store: PgVectorStore

    def for_tenant(self, tenant: str) -> ReindexDeps:
        return replace(self.deps, store=self.store.for_tenant(tenant))


async def open_resources(ctx: ServiceContext) -> Reindexer:
    settings = ctx.settings
    store = ctx.closing(await build_store(settings))

    @asynccontextmanager
    async def replay(group: str) -> AsyncIterator[ReplaySource]:
        async with open_replay(
            settings.bootstrap_servers, CONTENT_UPSERTED.name, group, settings.reindex_batch_size
        ) as source:
            yield source

    return Reindexer(ReindexDeps(
        tasks=BeatingTasks(ctx.closing(await build_task_store(settings)), ctx.heartbeat),
        store=store.for_tenant(DEFAULT_TENANT),
        embedder=ctx.closing(build_embedder(settings)),
        chunker=build_chunker(settings),
        open_replay=replay, batch_size=settings.reindex_batch_size,
        max_rate=settings.reindex_max_rate, is_transient=service.policy.is_transient,
        max_attempts=settings.consumer_max_attempts,
    ), store)


async def backfill(event: ReindexRequested, reindexer: Reindexer) -> None:
    owner = (await reindexer.store.owners()).get(event.model_version)
    if owner is not None and owner != event.tenant:  # a fine-tuned version is its trainer's
        service.log.warning("reindex of version %s for tenant %s refused: the version belongs to "
                            "another tenant", event.model_version, event.tenant)
        return
    task = await reindex(event, reindexer.for_tenant(event.tenant))
    service.log.info("%s: %s (%s)", task_id(event.model_version, event.tenant), task["status"],
                     task.get("error") or task["stage"])


async def fail_stalled(event: ReindexRequested, reindexer: Reindexer, reason: str) -> None:
    """An abandoned reindex: its version stops receiving the tenant's writes, its task says why."""
    deps = reindexer.for_tenant(event.tenant)
    await deps.store.fail_version(event.model_version, f"reindex abandoned: {reason}")
    await deps.tasks.update(task_id(event.model_version, event.tenant), status="failed", stage="stalled",
                            error=reason)


service = ConsumerService("reindexer", open_resources)
service.consume(
    REINDEX_REQUESTED, ReindexRequested, backfill, group_id="reindexer",
    max_poll_interval_ms=service.settings.rollout_max_poll_interval_ms,
    stall_timeout_s=service.settings.rollout_stall_timeout_s, on_stall=fail_stalled,
)
broker = service.broker
app = service.app()
