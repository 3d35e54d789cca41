"""The deployer service: model-published -> Triton (load, warm up, smoke test) -> reindex-requested.

Run: `uvicorn consumers.deployer.app:app`. One rollout at a time (model-published has one
partition); the offset is committed once the deploy's outcome is recorded in its task, so a
crash mid-deploy redelivers the event and the deploy runs again (each step is idempotent).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from consumers.deployer.artifacts import download_model, reference_embeddings
from consumers.deployer.handlers import DeployDeps, deploy, mlflow_record, task_id
from consumers.service import BeatingTasks, ConsumerService, ServiceContext
from core.bootstrap import build_embedder, build_model_control, build_model_registry, build_task_store
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


service = ConsumerService("deployer", open_resources)
service.consume(
    MODEL_PUBLISHED, ModelPublished, roll_out, group_id="deployer",
    max_poll_interval_ms=service.settings.rollout_max_poll_interval_ms,
    stall_timeout_s=service.settings.rollout_stall_timeout_s, on_stall=fail_stalled,
)
broker = service.broker
app = service.app()
