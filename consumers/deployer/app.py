"""The deployer service: model-published -> Triton (load, warm up, smoke test) -> reindex-requested.

Run: `uvicorn consumers.deployer.app:app`. One rollout at a time (model-published has one
partition); the offset is committed once the deploy's outcome is recorded in its task, so a
crash mid-deploy redelivers the event and the deploy runs again (each step is idempotent).
Beside it, Triton is kept holding only the versions some tenant needs (residency.py).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from functools import partial
from typing import Any

from consumers.deployer.artifacts import download_model, reference_embeddings
from consumers.deployer.handlers import DeployDeps, deploy, mlflow_record, task_id
from consumers.deployer.residency import RECONCILE_EVERY_S, reconcile
from consumers.service import BeatingTasks, ConsumerService, ServiceContext
from core.bootstrap import (
    build_embedder,
    build_model_control,
    build_model_registry,
    build_store,
    build_task_store,
)
from schemas.model_published import ModelPublished
from schemas.reindex import ReindexRequested
from schemas.topics import MODEL_PUBLISHED, REINDEX_REQUESTED


async def open_resources(ctx: ServiceContext) -> DeployDeps:
    settings = ctx.settings

    async def request_reindex(event: ReindexRequested) -> None:
        await ctx.publisher.publish(REINDEX_REQUESTED, event)

    registry = build_model_registry(settings)

    def record_serving(event: ModelPublished, decision: dict[str, Any]) -> None:
        tags, metrics = mlflow_record(decision)
        registry.log_serving(event.registry_version, tags, metrics, decision)

    return DeployDeps(
        tasks=BeatingTasks(ctx.closing(await build_task_store(settings)), ctx.heartbeat),
        server=ctx.closing(build_model_control(settings)),
        embedder=ctx.closing(build_embedder(settings)),
        fetch=partial(download_model, tracking_uri=settings.mlflow_uri),
        reference=reference_embeddings,
        publish=request_reindex,
        workdir=settings.state_dir / "deployer",
        min_cosine=settings.deploy_min_cosine,
        ready_timeout_s=settings.deploy_load_timeout_s,
        record_serving=record_serving,
        verify=lambda event: registry.published_mismatch(
            event.registry_version, event.artifact_uri, event.run_id),
    )


async def roll_out(event: ModelPublished, deps: DeployDeps) -> None:
    task = await deploy(event, deps)
    service.log.info("deploy-%s: %s (%s)", event.model_version, task["status"],
                     task.get("error") or task["stage"])


async def fail_stalled(event: ModelPublished, deps: DeployDeps, reason: str) -> None:
    await deps.tasks.update(task_id(event.model_version), status="failed", stage="stalled", error=reason)


async def keep_needed_versions_loaded() -> None:
    """Triton keeps loaded only the versions some tenant needs (consumers.deployer.residency)."""
    deps = service.resources
    if deps is None:
        return
    store = await build_store(service.settings)

    async def in_progress(since: datetime) -> set[int]:
        """Versions of deploys and reindexes active since `since` (a reindex of a parked version
        asks Triton for it before it marks the version building)."""
        found = [task for kind in ("deploy", "reindex")
                 for task in await deps.tasks.list(type=kind, limit=1000)]  # type: ignore[attr-defined]
        return {int(t["details"]["model_version"]) for t in found
                if (t.get("status") in ("pending", "running")
                    or (t.get("updated_at") and t["updated_at"] >= since))
                and str((t.get("details") or {}).get("model_version", "")).isdigit()}

    try:
        while True:
            try:
                await reconcile(deps.server, store.served_versions, in_progress)
            except Exception:  # Triton, PostgreSQL or MongoDB down: the next round tries again
                service.log.warning("could not reconcile the versions Triton keeps loaded", exc_info=True)
            await asyncio.sleep(RECONCILE_EVERY_S)
    finally:
        await store.close()


service = ConsumerService("deployer", open_resources)
service.in_background(keep_needed_versions_loaded)
service.consume(
    MODEL_PUBLISHED, ModelPublished, roll_out, group_id="deployer",
    max_poll_interval_ms=service.settings.rollout_max_poll_interval_ms,
    stall_timeout_s=service.settings.rollout_stall_timeout_s, on_stall=fail_stalled,
)
broker = service.broker
app = service.app()
