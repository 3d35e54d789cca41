"""The reindexer service: reindex-requested -> backfill a version's index for the requesting
tenant (its items only) -> switch that tenant's search to it.

Run: `uvicorn consumers.reindexer.app:app`. A request is accepted into the durable work
queue and its offset committed; one reindex at a time is then taken in fair turns between
tenants (consumers.fair_scheduler): a tenant's reindex never waits behind another tenant's
queue. A worker that dies mid-backfill loses its lease, the reindex runs again and resumes
from its replay group's committed offsets. Infrastructure failures (Triton, PostgreSQL,
Kafka, MongoDB down) are retried after a pause; a reindex silent for
`rollout_stall_timeout_s` is abandoned (its version and task marked failed).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

from consumers.fair_scheduler import consume_fairly
from consumers.reindexer.handlers import ReindexDeps, ReplaySource, reindex, task_id
from consumers.reindexer.replay import open_replay
from consumers.service import BeatingTasks, ConsumerService, ServiceContext
from core.adapters.pgvector import PgVectorStore
from core.adapters.task_store import TaskStore
from core.adapters.work_queue import MongoWorkQueue
from core.bootstrap import build_chunker, build_embedder, build_store, build_task_store
from schemas.envelope import DEFAULT_TENANT
from schemas.reindex import ReindexRequested
from schemas.topics import CONTENT_UPSERTED, REINDEX_REQUESTED


@dataclass(frozen=True)
class Reindexer:
    """What every reindex shares; each request acts on its tenant's view of the store."""

    deps: ReindexDeps
    store: PgVectorStore
    queue: MongoWorkQueue

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

    tasks: TaskStore = ctx.closing(await build_task_store(settings))
    return Reindexer(ReindexDeps(
        tasks=BeatingTasks(tasks, ctx.heartbeat),
        store=store.for_tenant(DEFAULT_TENANT),
        embedder=ctx.closing(build_embedder(settings)),
        chunker=build_chunker(settings),
        open_replay=replay, batch_size=settings.reindex_batch_size,
        max_rate=settings.reindex_max_rate, ready_timeout_s=settings.reindex_ready_timeout_s,
        is_transient=service.policy.is_transient,
        max_attempts=settings.consumer_max_attempts,
    ), store, MongoWorkQueue(tasks.client, settings.mongo_db))


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
    """An abandoned reindex (stalled, or its attempts used up): its version stops receiving the
    tenant's writes, its task says why."""
    deps = reindexer.for_tenant(event.tenant)
    if event.model_version.isdigit():  # others never had an index
        await deps.store.fail_version(event.model_version, f"reindex abandoned: {reason}")
    stage = "stalled" if "stall timeout" in reason else "abandoned"
    await deps.tasks.update(task_id(event.model_version, event.tenant), status="failed", stage=stage,
                            error=reason)


service = ConsumerService("reindexer", open_resources)
consume_fairly(
    service, REINDEX_REQUESTED, ReindexRequested, backfill, kind="reindex", group_id="reindexer",
    queue_of=lambda reindexer: reindexer.queue,
    task_id_of=lambda event: task_id(event.model_version, event.tenant),
    on_failed=fail_stalled, stall_timeout_s=service.settings.rollout_stall_timeout_s, on_stall=fail_stalled,
)
broker = service.broker
app = service.app()
