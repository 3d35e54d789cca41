"""The trainer service: training-requested -> dataset -> fine-tune -> evaluate -> gate ->
MLflow -> model-published, recorded in the run's task; then commit.

Run: `uvicorn consumers.trainer.app:app`. One request at a time; the offset is committed
after the task holds the outcome. Training runs in a worker thread, and the consumer may
hold a record for `training_max_poll_interval_ms` without being dropped from its group.
An invalid request goes to `training-requested.dlq`; when MLflow, MongoDB or PostgreSQL is
unreachable the request is retried after a pause, its task left pending at stage "waiting".
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import psycopg
from faststream import AckPolicy
from faststream.exceptions import NackMessage
from pymongo.errors import PyMongoError

from consumers.parking import decode_or_park
from consumers.service import create_app, create_broker, raw_message
from consumers.trainer.handlers import TrainerConfig, TrainerDeps, handle_training_request
from core.adapters.item_texts import PgItemTexts
from core.adapters.pgvector_store import PgVectorStore
from core.adapters.session_store import MongoSessionStore
from core.adapters.task_store import TaskStore
from core.base_model import base_model_dir
from core.bootstrap import (
    build_model_registry,
    build_session_store,
    build_store,
    build_task_store,
    training_work_dir,
)
from core.config import get_settings
from core.ports import DependencyUnavailable
from core.training.dataset import DatasetBuilder, DatasetConfig
from core.training.finetune import SentenceTransformersTrainer
from schemas.codec import encode
from schemas.model_published import ModelPublished
from schemas.topics import MODEL_PUBLISHED, TRAINING_REQUESTED
from schemas.training import TrainingRequested

log = logging.getLogger("flywheel.trainer")
TRANSIENT_ERRORS = (DependencyUnavailable, PyMongoError, psycopg.OperationalError)
settings = get_settings()
broker, registry = create_broker("trainer", settings)


@dataclass
class Resources:
    store: PgVectorStore
    sessions: MongoSessionStore
    tasks: TaskStore
    deps: TrainerDeps


resources: dict[str, Resources] = {}


async def publish_model(event: ModelPublished) -> None:
    await broker.publish(
        encode(event), topic=MODEL_PUBLISHED.name, key=event.model_version.encode(),
        headers={"content-type": "application/json"},
    )


async def open_dependencies() -> None:
    store = await build_store(settings)
    sessions = await build_session_store(settings)
    tasks = await build_task_store(settings)
    datasets = DatasetBuilder(sessions, PgItemTexts(store), DatasetConfig(
        eval_fraction=settings.training_eval_fraction, max_negatives=settings.training_max_negatives,
        max_examples=settings.training_max_examples, max_eval_queries=settings.training_max_eval_queries,
        session_batch=settings.training_session_batch,
    ))
    config = TrainerConfig(
        base_model_dir=base_model_dir(settings), work_dir=training_work_dir(settings),
        batch_size=settings.training_batch_size, mini_batch_size=settings.training_mini_batch_size,
        learning_rate=settings.training_learning_rate,
        warmup_fraction=settings.training_warmup_fraction, seed=settings.training_seed,
    )
    deps = TrainerDeps(tasks, datasets, SentenceTransformersTrainer(), build_model_registry(settings),
                       store.active_version, publish_model, config, transient=TRANSIENT_ERRORS)
    resources["trainer"] = Resources(store, sessions, tasks, deps)


async def close_dependencies() -> None:
    if "trainer" in resources:
        r = resources.pop("trainer")
        await r.store.close()
        await r.sessions.close()
        await r.tasks.close()


@broker.subscriber(
    TRAINING_REQUESTED.name,
    group_id="trainer",
    auto_offset_reset="earliest",
    ack_policy=AckPolicy.NACK_ON_ERROR,
    max_poll_interval_ms=settings.training_max_poll_interval_ms,
    decoder=raw_message,
)
async def on_training_requested(record: Any) -> None:
    event = await decode_or_park(broker, record, TrainingRequested)
    if event is None:
        return
    try:
        task = await handle_training_request(event, resources["trainer"].deps)
    except TRANSIENT_ERRORS as error:
        log.warning("a dependency is unavailable, training request %s will be retried: %r",
                    event.run_id, error)
        await asyncio.sleep(settings.retry_backoff_s)
        raise NackMessage() from error
    log.info("training run %s: %s (%s)", event.run_id, task["status"], task.get("error") or task["stage"])


app = create_app("trainer", broker, registry)
app.on_startup(open_dependencies)
app.after_shutdown(close_dependencies)
