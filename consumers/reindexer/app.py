"""The reindexer service: reindex-requested -> backfill a version's index -> switch search to it.

Run: `uvicorn consumers.reindexer.app:app`. The request's offset is committed when the
reindex has finished (or failed for good), so a crash mid-backfill redelivers it and the
backfill resumes from its replay group's committed offsets. Infrastructure failures
(Triton, PostgreSQL, Kafka, MongoDB down) are retried (consumers.service).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from consumers.reindexer.handlers import ReindexDeps, ReplaySource, reindex, task_id
from consumers.reindexer.replay import open_replay
from consumers.service import BeatingTasks, ConsumerService, ServiceContext
from core.bootstrap import build_chunker, build_embedder, build_store, build_task_store
from schemas.reindex import ReindexRequested
from schemas.topics import CONTENT_UPSERTED, REINDEX_REQUESTED


async def open_resources(ctx: ServiceContext) -> ReindexDeps:
    settings = ctx.settings

    @asynccontextmanager
    async def replay(group: str) -> AsyncIterator[ReplaySource]:
        async with open_replay(
            settings.bootstrap_servers, CONTENT_UPSERTED.name, group, settings.reindex_batch_size
        ) as source:
            yield source

    return ReindexDeps(
        tasks=BeatingTasks(ctx.closing(await build_task_store(settings)), ctx.heartbeat),
        store=ctx.closing(await build_store(settings)),
        embedder=ctx.closing(build_embedder(settings)),
        chunker=build_chunker(settings),
        open_replay=replay, batch_size=settings.reindex_batch_size,
        max_rate=settings.reindex_max_rate, is_transient=service.policy.is_transient,
        max_attempts=settings.consumer_max_attempts,
    )


async def backfill(event: ReindexRequested, deps: ReindexDeps) -> None:
    task = await reindex(event, deps)
    service.log.info("reindex-%s: %s (%s)", event.model_version, task["status"],
                     task.get("error") or task["stage"])


async def fail_stalled(event: ReindexRequested, deps: ReindexDeps, reason: str) -> None:
    """An abandoned reindex: its version stops receiving writes, its task says why."""
    await deps.store.fail_version(event.model_version, f"reindex abandoned: {reason}")
    await deps.tasks.update(task_id(event.model_version), status="failed", stage="stalled", error=reason)


service = ConsumerService("reindexer", open_resources)
service.consume(
    REINDEX_REQUESTED, ReindexRequested, backfill, group_id="reindexer",
    max_poll_interval_ms=service.settings.rollout_max_poll_interval_ms,
    stall_timeout_s=service.settings.rollout_stall_timeout_s, on_stall=fail_stalled,
)
broker = service.broker
app = service.app()
