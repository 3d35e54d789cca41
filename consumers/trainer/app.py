"""The trainer service: training-requested -> dataset -> fine-tune -> evaluate -> gate ->
MLflow -> model-published, recorded in the run's task; then commit. A run reads only its
tenant's sessions and starts from its tenant's active version; the version it publishes
belongs to that tenant.

Run: `uvicorn consumers.trainer.app:app`. A request is accepted into the durable work queue
and its offset committed; one run at a time is then taken in fair turns between tenants
(consumers.fair_scheduler): a tenant's run never waits behind another tenant's queue.
Training runs in a worker thread. When MLflow, MongoDB or PostgreSQL is unreachable the run
is retried after a pause (the error policy's backoff), its task left pending at stage
"waiting"; past the policy's attempts the task fails with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from consumers.fair_scheduler import consume_fairly
from consumers.service import ConsumerService, ServiceContext
from consumers.trainer.handlers import TrainerConfig, TrainerDeps, handle_training_request
from core.adapters.dataset_store import DatasetStore
from core.adapters.index_ranker import IndexRanker
from core.adapters.item_texts import PgItemTexts
from core.adapters.pgvector import PgVectorStore
from core.adapters.work_queue import MongoWorkQueue
from core.base_model import base_model_dir
from core.bootstrap import (
    build_embedder,
    build_model_registry,
    build_session_store,
    build_store,
    build_task_store,
    training_work_dir,
)
from core.fusion import FusionChoice
from core.training.dataset import DatasetBuilder, DatasetConfig
from core.training.linear_map import LinearMapConfig
from core.training.mining import MiningConfig
from core.training.trainer import SentenceTransformersTrainer
from schemas.envelope import DEFAULT_TENANT
from schemas.model_published import ModelPublished
from schemas.topics import MODEL_PUBLISHED, TRAINING_REQUESTED
from schemas.training import TrainingRequested


async def open_resources(ctx: ServiceContext) -> Trainer:
    settings = ctx.settings
    store = ctx.closing(await build_store(settings))
    sessions = ctx.closing(await build_session_store(settings))
    tasks = ctx.closing(await build_task_store(settings))
    embedder = ctx.closing(build_embedder(settings))
    uploaded = ctx.closing(await DatasetStore.connect(settings.mongo_uri, settings.mongo_db))

    async def version_of(tenant: str) -> str | None:
        return await store.active_version(tenant)

    def datasets_of(tenant: str) -> DatasetBuilder:
        """The tenant's sessions only: its clicks never shape another tenant's model."""
        return DatasetBuilder(sessions.for_tenant(tenant), PgItemTexts(store), DatasetConfig(
            eval_fraction=settings.training_eval_fraction, max_negatives=settings.training_max_negatives,
            max_examples=settings.training_max_examples, max_eval_queries=settings.training_max_eval_queries,
            session_batch=settings.training_session_batch,
            corpus_items=settings.training_corpus_items,
        ), IndexRanker(store.for_tenant(tenant), embedder, version_of), MiningConfig(
            per_pair=settings.training_mined_negatives, depth=settings.training_mining_depth,
            max_ratio=settings.training_mining_max_ratio, max_queries=settings.training_mining_max_queries,
        ), keyword=store.for_tenant(tenant))

    config = TrainerConfig(
        base_model_dir=base_model_dir(settings), work_dir=training_work_dir(settings),
        batch_size=settings.training_batch_size, mini_batch_size=settings.training_mini_batch_size,
        learning_rate=settings.training_learning_rate,
        warmup_fraction=settings.training_warmup_fraction, seed=settings.training_seed,
        recipe=settings.training_recipe, map_epochs=settings.training_map_epochs,
    )

    async def publish_model(event: ModelPublished) -> None:
        await ctx.publisher.publish(MODEL_PUBLISHED, event)

    lineage = store.for_tenant(DEFAULT_TENANT)
    return Trainer(TrainerDeps(
        tasks, datasets_of(DEFAULT_TENANT), SentenceTransformersTrainer(
            FusionChoice(settings.training_fusion_min_queries, settings.training_fusion_min_gain),
            LinearMapConfig(learning_rate=settings.training_map_learning_rate,
                            identity_weight=settings.training_map_identity_weight)),
        build_model_registry(settings),
        lineage.active_version, publish_model, config, is_transient=service.policy.is_transient,
        judgments=uploaded),
        datasets_of, store, MongoWorkQueue(tasks.client, settings.mongo_db))


@dataclass(frozen=True)
class Trainer:
    """What every run shares; each request trains on its tenant's sessions, from its tenant's
    active version (core.adapters.pgvector.versions)."""

    deps: TrainerDeps
    datasets_of: Callable[[str], DatasetBuilder]
    store: PgVectorStore
    queue: MongoWorkQueue

    def for_tenant(self, tenant: str) -> TrainerDeps:
        return replace(self.deps, datasets=self.datasets_of(tenant),
                       active_version=self.store.for_tenant(tenant).active_version)


async def train(event: TrainingRequested, trainer: Trainer) -> None:
    task = await handle_training_request(event, trainer.for_tenant(event.tenant))
    service.log.info("training run %s: %s (%s)", event.run_id, task["status"],
                     task.get("error") or task["stage"])


async def fail(event: TrainingRequested, trainer: Trainer, reason: str) -> None:
    """The run could not be carried out (the attempts used up): its task says why."""
    await trainer.deps.tasks.update(event.run_id, status="failed", error=reason[:1000])


service = ConsumerService("trainer", open_resources)
consume_fairly(
    service, TRAINING_REQUESTED, TrainingRequested, train, kind="training", group_id="trainer",
    queue_of=lambda trainer: trainer.queue, task_id_of=lambda event: event.run_id, on_failed=fail,
)
broker = service.broker
app = service.app()
