"""Blue/green reindex of a model version, over ports (the Kafka replay is one of them).

1. Create the version's chunk table (status building). From then on the live indexer also
   writes every new or changed item into it, so nothing arriving during the backfill is lost.
2. Backfill: replay the compacted content-upserted from offset 0 with the reindex's own
   consumer group, up to the end offsets taken when the task first started, through the
   indexer's own code path (parse_records + index_batch into this version only). The group's
   offsets are committed after each batch is in PostgreSQL, so a restart resumes there.
   A replayed event only fills the new table when it is still the item's current state (the
   live indexer, which is ahead, owns the items table): stale upserts and deletes that were
   since overtaken are skipped, so a replay never resurrects or drops a live item.
3. Reconcile: embed any item whose chunks in the version are still missing or stale (an item
   the live indexer wrote while the table was being created), drop chunks of deleted items.
Everything is the requesting tenant's (the event's envelope tenant): its lineage (`deps.store`
is that tenant's view of the store), its items only, its task `reindex-<version>[-<tenant>]`
and replay group, so one reindex runs per version per tenant and never touches another
tenant's items or active version.

4. Switch the active pointer atomically (search never sees a partial index); the previous
   version is kept (retired, still written to as the rollback target), so activating it
   again rolls back at once. The switch is a compare-and-set on the active version the reindex
   started from (kept in the task): if an operator rolled back or activated another version
   meanwhile, the version is completed without being activated and the task says so
   (`details.note`), so a finishing reindex never overrides a rollback.

A reindex cancelled (core.task_control) stops at its next stage or progress report (each at
most `progress_every_s` apart, between batches), marks its version `failed` ("cancelled") so
nothing writes to it any more, and leaves the active version serving; a pending one is skipped.

A reindex that fails, or is abandoned after `max_attempts` transient failures, marks its
version `failed` (with the reason) so that no content is written to it any more; a request
for it again makes it building again and resumes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from core.chunking import Chunker
from core.domain import ConcurrentChange, Expected
from core.indexing import Delete, Operation, Upsert, index_batch, parse_records
from core.ports import ReindexStore, ReplaySource, ServingEmbedder, Tasks
from core.rollout import reindex_group, reindex_task_id
from core.task_control import TaskCancelled, stop_if_cancelled
from producers.ratelimit import limiter
from schemas.content import ContentUpserted
from schemas.envelope import DEFAULT_TENANT
from schemas.reindex import ReindexRequested

log = logging.getLogger("flywheel.reindexer")

MAX_RECONCILE_ROUNDS = 10_000


class ReindexFailed(RuntimeError):
    """The reindex cannot succeed as requested; the message says why."""


@dataclass
class ReindexDeps:
    tasks: Tasks
    store: ReindexStore
    embedder: ServingEmbedder
    chunker: Chunker
    # group id -> the replay of content-upserted by that group
    open_replay: Callable[[str], AbstractAsyncContextManager[ReplaySource]]
    batch_size: int = 256
    max_rate: float = 0.0
    ready_timeout_s: float = 60.0
    progress_every_s: float = 1.0
    # Errors worth retrying (infrastructure down): they propagate, and the request is redelivered.
    is_transient: Callable[[BaseException], bool] = lambda error: False
    # Transient failures (counted on the task, across restarts) after which the reindex is
    # abandoned: the task fails and its version is marked failed, so nothing writes to it.
    max_attempts: int = 10


def task_id(model_version: str, tenant: str = DEFAULT_TENANT) -> str:
    return reindex_task_id(model_version, tenant)


def replay_group(model_version: str, tenant: str = DEFAULT_TENANT) -> str:
    return reindex_group(model_version, tenant)


async def reindex(event: ReindexRequested, deps: ReindexDeps) -> dict[str, Any]:
    """Build and (if asked) activate the index of `event.model_version`; returns the task.

    Idempotent: a finished task is left alone; an unfinished one resumes where its replay
    group's committed offsets say.
    """
    version = event.model_version
    tid = task_id(version, event.tenant)
    started_from = await deps.store.active_version()
    task, _ = await deps.tasks.create(tid, "reindex", event.tenant, details={
        "model_version": version, "activate": event.activate, "from_offset": event.from_offset,
        "source_topic": event.source_topic, "group": replay_group(version, event.tenant),
        "started_from": started_from,
    })
    if task["status"] in ("succeeded", "cancelled"):
        log.info("reindex of version %s already %s; nothing to do", version, task["status"])
        return task
    # A resumed reindex compares with the active version its first attempt started from.
    started_from = (task.get("details") or {}).get("started_from", started_from)
    stage = "preparing"
    note = None
    # A request after the task failed starts a new count of transient failures.
    failed_before = 0
    if task["status"] != "failed":
        failed_before = int((task.get("details") or {}).get("transient_failures") or 0)
    try:
        stop_if_cancelled(task)  # asked to stop before a crash or a transient failure
        stop_if_cancelled(await deps.tasks.update(tid, status="running", stage=stage, error=None,
                                                  **{"details.transient_failures": failed_before}))
        if not version.isdigit():
            raise ReindexFailed(f"model versions are numeric, not {version!r}")
        await _require_served(deps, version)
        dim = int((await deps.embedder.embed(["dimension probe"], version)).vectors.shape[1])
        known = await deps.store.dimensions()
        if version in known and known[version] != dim:
            raise ReindexFailed(f"version {version} has an index of {known[version]} dimensions; "
                                f"Triton's model gives {dim}")
        await deps.store.ensure_version(version, dim, status="building", fusion_weight=event.fusion_weight)

        stage = "backfilling"
        consumed = await _backfill(event, deps, task.get("details", {}))

        stage = "reconciling"
        stop_if_cancelled(await deps.tasks.update(tid, stage=stage))
        reconciled = await _reconcile(version, deps)

        stage = "activating"
        stop_if_cancelled(await deps.tasks.update(tid, stage=stage, progress=0.99))
        previous = None
        activated = False
        if event.activate:
            try:
                previous = await deps.store.activate(version, Expected(started_from, "building"))
                activated = True
            except ConcurrentChange as lost:
                note = (f"not activated: {lost}. The index of version {version} is complete; "
                        f"activate it explicitly if it should serve")
                log.warning("reindex of version %s: %s", version, note)
        if not activated:
            await deps.store.finish_version(version)
    except TaskCancelled:
        log.info("reindex of version %s cancelled at %s", version, stage)
        await _fail_version(deps, version, f"{stage}: cancelled")
        cancelled = await deps.tasks.update(tid, status="cancelled", stage=stage, error="cancelled")
        return cancelled or task
    except Exception as error:
        reason = f"{stage}: {error}"
        if deps.is_transient(error):
            failures = failed_before + 1
            if failures < deps.max_attempts:
                await _note(deps, tid, f"{stage}: retrying after {error!r}", failures)
                raise
            reason = f"{stage}: abandoned after {failures} attempts, the last failed with {error!r}"
        log.error("reindex of version %s failed at %s", version, reason)
        await _fail_version(deps, version, reason)
        failed = await deps.tasks.update(tid, status="failed", stage=stage, error=reason)
        return failed or task
    done = await deps.tasks.update(
        tid, status="succeeded", stage="done", progress=1.0, error=None,
        **{"details.previous_version": previous, "details.activated": activated,
           "details.consumed": consumed, "details.reconciled": reconciled, "details.note": note},
    )
    log.info("version %s indexed (%d events replayed, %d reconciled)%s", version, consumed, reconciled,
             f"; active now, previous {previous}" if activated else "")
    return done or task


async def _fail_version(deps: ReindexDeps, version: str, reason: str) -> None:
    """Stop writing to a version whose reindex failed (if it got as far as having an index)."""
    if not version.isdigit():
        return
    try:
        if await deps.store.fail_version(version, f"reindex failed at {reason}"):
            log.warning("version %s marked failed: new content is no longer written to it", version)
    except Exception:  # the store may be what failed; a retried request marks it again
        log.warning("could not mark version %s failed", version, exc_info=True)


async def _note(deps: ReindexDeps, tid: str, message: str, failures: int) -> None:
    try:
        await deps.tasks.update(tid, error=message, **{"details.transient_failures": failures})
    except Exception:  # the task store may be the thing that is down
        log.warning("could not record on task %s: %s", tid, message)


async def _require_served(deps: ReindexDeps, version: str) -> None:
    deadline = time.monotonic() + deps.ready_timeout_s
    while not await deps.embedder.ready(version):
        if time.monotonic() > deadline:
            raise ReindexFailed(f"Triton does not serve model version {version}; deploy it first")
        await asyncio.sleep(0.5)


def _ints(mapping: dict[str, Any] | None) -> dict[int, int] | None:
    return {int(k): int(v) for k, v in mapping.items()} if mapping else None


async def _backfill(event: ReindexRequested, deps: ReindexDeps, details: dict[str, Any]) -> int:
    version = event.model_version
    tid = task_id(version, event.tenant)
    async with deps.open_replay(replay_group(version, event.tenant)) as replay:
        # The snapshot is taken once: a resumed run catches up to the same end.
        ends = _ints(details.get("end_offsets")) or await replay.end_offsets()
        positions = await replay.resume(event.from_offset)
        starts = _ints(details.get("start_offsets")) or dict(positions)
        total = sum(max(0, ends[p] - starts.get(p, 0)) for p in ends)
        await deps.tasks.update(tid, stage="backfilling", **{
            "details.end_offsets": {str(p): o for p, o in ends.items()},
            "details.start_offsets": {str(p): o for p, o in starts.items()},
            "details.total": total,
        })
        limit = limiter(deps.max_rate)
        last_report = 0.0

        def done_so_far() -> int:
            return sum(max(0, min(positions.get(p, 0), end) - starts.get(p, 0)) for p, end in ends.items())

        while any(positions.get(p, 0) < end for p, end in ends.items()):
            records, positions = await replay.fetch(ends, deps.batch_size)
            for _ in records:
                await limit()
            if records:
                await backfill_batch(records, version, deps, event.tenant)
            await replay.commit(positions)  # only after the batch is durable
            if time.monotonic() - last_report >= deps.progress_every_s:
                last_report = time.monotonic()
                consumed = done_so_far()
                stop_if_cancelled(await deps.tasks.update(
                    tid, progress=round(0.95 * consumed / total, 4) if total else 0.95,
                    **{"details.consumed": consumed}))
        return done_so_far()


async def backfill_batch(records: Sequence[Any], version: str, deps: ReindexDeps,
                         tenant: str | None = None) -> int:
    """Index replayed records (of `tenant` only, when given: a reindex re-embeds the items of
    the tenant whose version it builds) into `version` only; returns how many items it wrote.

    Invalid records are skipped here: the live indexer dead-lettered them already.
    """
    parsed, invalid = parse_records(records)
    if invalid:
        log.debug("skipping %d invalid records (dead-lettered by the indexer)", len(invalid))
    operations = await current_only([op for _, op in parsed if tenant is None or op.key[0] == tenant],
                                    deps.store)
    if not operations:
        return 0
    report = await index_batch(operations, deps.store, deps.embedder, deps.chunker, versions=[version])
    return report.upserted + report.deleted


async def current_only(operations: Sequence[Operation], store: ReindexStore) -> list[Operation]:
    """The replayed operations that still describe the item as the store holds it now.

    An upsert counts when the stored item has exactly its version (an older event was
    overtaken; a newer one the live indexer writes into every building version itself); a
    delete counts when the item is gone (a later re-creation must not be deleted).
    """
    if not operations:
        return []
    stored = await store.item_versions(sorted({op.key for op in operations}))
    kept: list[Operation] = []
    for op in operations:
        if isinstance(op, Upsert):
            if stored.get(op.key) == op.event.version:
                kept.append(op)
        elif isinstance(op, Delete) and op.key not in stored:
            kept.append(op)
    return kept


async def _reconcile(version: str, deps: ReindexDeps) -> int:
    written = 0
    for _ in range(MAX_RECONCILE_ROUNDS):
        items = await deps.store.missing_items(version, deps.batch_size)
        if not items:
            break
        operations: list[Operation] = []
        for item in items:
            try:
                operations.append(Upsert(ContentUpserted(
                    id=item.id, tenant=item.tenant, title=item.title, text=item.text,
                    metadata=item.metadata, version=item.version, source="reindexer",
                )))
            except ValueError as error:
                log.warning("cannot re-embed %s/%s: %s", item.tenant, item.id, error)
        report = await index_batch(operations, deps.store, deps.embedder, deps.chunker, versions=[version])
        written += report.upserted
        if report.upserted == 0:
            log.warning("%d items stay without chunks in version %s", len(items), version)
            break
    await deps.store.delete_orphans(version)
    return written
