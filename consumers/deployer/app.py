"""The deployer service: model-published -> Triton (load, warm up, smoke test) -> reindex-requested.

Run: `uvicorn consumers.deployer.app:app`. One rollout at a time (model-published has one
partition); the offset is committed once the deploy's outcome is recorded in its task, so a
crash mid-deploy redelivers the event and the deploy runs again (each step is idempotent).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

from faststream import AckPolicy
from faststream.exceptions import NackMessage

from consumers.deployer.artifacts import download_model, reference_embeddings
from consumers.deployer.handlers import DeployDeps, deploy
from consumers.parking import decode_or_park
from consumers.service import create_app, create_broker, raw_message
from core.adapters.task_store import TaskStore
from core.adapters.triton_control import TritonModelControl
from core.adapters.triton_embedder import TritonEmbedder
from core.bootstrap import build_embedder, build_model_control, build_task_store
from core.config import get_settings
from producers.publisher import Publisher
from schemas.model_published import ModelPublished
from schemas.reindex import ReindexRequested
from schemas.topics import MODEL_PUBLISHED, REINDEX_REQUESTED

log = logging.getLogger("flywheel.deployer")
settings = get_settings()
broker, registry = create_broker("deployer", settings)


@dataclass
class Resources:
    tasks: TaskStore
    control: TritonModelControl
    embedder: TritonEmbedder
    publisher: Publisher

    def deps(self) -> DeployDeps:
        async def publish(event: ReindexRequested) -> None:
            await self.publisher.publish(REINDEX_REQUESTED, event)

        return DeployDeps(
            tasks=self.tasks,
            server=self.control,
            embedder=self.embedder,
            fetch=partial(_fetch, tracking_uri=settings.mlflow_uri),
            reference=reference_embeddings,
            publish=publish,
            workdir=settings.state_dir / "deployer",
            min_cosine=settings.deploy_min_cosine,
            ready_timeout_s=settings.deploy_load_timeout_s,
        )


def _fetch(artifact_uri: str, dest: Any, *, tracking_uri: str) -> Any:
    return download_model(artifact_uri, dest, tracking_uri)


resources: dict[str, Resources] = {}


async def open_resources() -> None:
    publisher = Publisher(settings.bootstrap_servers, source="deployer", client_id="flywheel-deployer")
    await publisher.start()
    resources["deployer"] = Resources(
        await build_task_store(settings), build_model_control(settings), build_embedder(settings), publisher
    )


async def close_resources() -> None:
    if "deployer" in resources:
        r = resources.pop("deployer")
        await r.publisher.stop()
        await r.embedder.close()
        await r.control.close()
        await r.tasks.close()


@broker.subscriber(
    MODEL_PUBLISHED.name,
    group_id="deployer",
    auto_offset_reset="earliest",
    ack_policy=AckPolicy.NACK_ON_ERROR,
    max_poll_interval_ms=settings.rollout_max_poll_interval_ms,
    decoder=raw_message,
)
async def on_model_published(record: Any) -> None:
    event = await decode_or_park(broker, record, ModelPublished)
    if event is None:
        return
    try:
        task = await deploy(event, resources["deployer"].deps())
    except Exception as error:  # the task store or Kafka is unreachable: retry the event later
        log.warning("deploy of %s interrupted, will be retried: %r", event.model_version, error)
        await asyncio.sleep(settings.retry_backoff_s)
        raise NackMessage() from error
    log.info("deploy-%s: %s (%s)", event.model_version, task["status"], task.get("error") or task["stage"])


app = create_app("deployer", broker, registry)
app.on_startup(open_resources)
app.after_shutdown(close_resources)
