"""The composition root: builds the real adapters from settings."""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from core.adapters.pgvector import PgVectorStore
from core.adapters.triton_embedder import TritonEmbedder, wait_until_ready
from core.base_model import base_model_dir
from core.chunking import Chunker, ChunkingConfig, tokenizer_for
from core.config import Settings
from core.domain import NEW_TENANTS, ConcurrentChange, Expected
from core.embeddings import max_sequence_tokens
from core.serving import BASE_SERVING_VERSION

if TYPE_CHECKING:
    from core.adapters.mlflow_registry import MLflowRegistry
    from core.adapters.session_store import MongoSessionStore
    from core.adapters.task_store import TaskStore
    from core.adapters.triton_control import TritonModelControl
    from core.source_admin import SourceAdmin

log = logging.getLogger(__name__)

def build_embedder(settings: Settings) -> TritonEmbedder:
    return TritonEmbedder(
        settings.triton_grpc_url, settings.triton_model_name, max_batch_size=settings.triton_max_batch_size,
        request_size=settings.triton_request_size, query_deadline_s=settings.triton_query_deadline_s,
    )


def build_chunker(settings: Settings) -> Chunker:
    model_dir = base_model_dir(settings)
    max_tokens = settings.chunk_max_tokens or max_sequence_tokens(model_dir)
    return Chunker(
        tokenizer_for(model_dir),
        ChunkingConfig(max_tokens, settings.chunk_overlap_tokens, settings.chunk_header),
    )


async def build_store(settings: Settings) -> PgVectorStore:
    return await PgVectorStore.connect(
        settings.postgres_dsn, statement_timeout_ms=settings.postgres_statement_timeout_ms)


async def ensure_initial_version(store: PgVectorStore, embedder: TritonEmbedder) -> None:
    """On a fresh database, index with the base model: create its version and activate it for
    new tenants (every tenant without a lineage of its own serves it)."""
    lineage = store.for_tenant(NEW_TENANTS)
    if await lineage.active_version() is None:
        await wait_until_ready(embedder, BASE_SERVING_VERSION)
        probe = await embedder.embed(["dimension probe"], BASE_SERVING_VERSION)
        await lineage.ensure_version(BASE_SERVING_VERSION, int(probe.vectors.shape[1]), status="building")
        try:  # only if still nothing is active: a version activated meanwhile stays
            await lineage.activate(BASE_SERVING_VERSION, Expected(None))
        except ConcurrentChange as lost:
            log.info("base model version %s not activated: %s", BASE_SERVING_VERSION, lost)
            return
        log.info("activated base model version %s", BASE_SERVING_VERSION)


async def build_session_store(settings: Settings) -> MongoSessionStore:
    from core.adapters.session_store import MongoSessionStore

    return await MongoSessionStore.connect(settings.mongo_uri, settings.mongo_db, settings.sessions_ttl_days)


async def build_task_store(settings: Settings) -> TaskStore:
    from core.adapters.task_store import TaskStore

    return await TaskStore.connect(settings.mongo_uri, settings.mongo_db)


def build_model_registry(settings: Settings) -> MLflowRegistry:
    from core.adapters.mlflow_registry import MLflowRegistry

    # MLflow's client retries a failed request 7 times with growing pauses (minutes in all);
    # an outage should reach the trainer's own retry, which keeps the task up to date, sooner.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(settings.mlflow_http_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(settings.mlflow_http_timeout_s))
    return MLflowRegistry(settings.mlflow_uri, settings.mlflow_experiment, training_work_dir(settings))


def training_work_dir(settings: Settings) -> Path:
    return settings.training_work_dir or settings.state_dir / "training"


def build_model_control(settings: Settings) -> TritonModelControl:
    from core.adapters.triton_control import TritonModelControl

    return TritonModelControl(
        settings.triton_grpc_url, settings.triton_model_name, settings.triton_repository,
        load_timeout_s=settings.deploy_load_timeout_s,
    )


def build_source_admin(
    settings: Settings, delete_items: Callable[[str, list[str]], Awaitable[int]]
) -> SourceAdmin:
    """Sources over the real Kafka Connect, PostgreSQL and Kafka; `delete_items` publishes the
    tombstones of a removed source's items (the caller owns the producer)."""
    from core.adapters.kafka_admin import ensure_topics
    from core.adapters.kafka_connect import KafkaConnectClient
    from core.adapters.source_store import PgSourceDatabase, PgSourceStore
    from core.source_admin import SourceAdmin

    async def create_topics(topics: dict[str, int]) -> None:
        await ensure_topics(settings.bootstrap_servers, {
            name: (partitions, {"cleanup.policy": "delete"}) for name, partitions in topics.items()})

    return SourceAdmin(
        PgSourceStore(settings.postgres_dsn), PgSourceDatabase(), KafkaConnectClient(settings.connect_url),
        create_topics, delete_items, settings.sources_topic_prefix, settings.kafka_partitions,
        settings.bootstrap_servers,
    )
