"""The composition root: builds the real adapters from settings."""

from __future__ import annotations

import logging

from core.adapters.pgvector_store import PgVectorStore
from core.adapters.triton_embedder import TritonEmbedder, wait_until_ready
from core.chunking import Chunker, ChunkingConfig, tokenizer_for
from core.config import Settings
from core.models import base_model_dir

log = logging.getLogger(__name__)

# The version infra writes into Triton's repository on first start.
BASE_MODEL_VERSION = "1"


def build_embedder(settings: Settings) -> TritonEmbedder:
    return TritonEmbedder(
        settings.triton_grpc_url, settings.triton_model_name, max_batch_size=settings.triton_max_batch_size
    )


def build_chunker(settings: Settings) -> Chunker:
    return Chunker(
        tokenizer_for(base_model_dir(settings)),
        ChunkingConfig(settings.chunk_max_tokens, settings.chunk_overlap_tokens),
    )


async def build_store(settings: Settings) -> PgVectorStore:
    return await PgVectorStore.connect(settings.postgres_dsn)


async def ensure_initial_version(store: PgVectorStore, embedder: TritonEmbedder) -> None:
    """On a fresh database, index with the base model: create and activate its version."""
    if await store.active_version() is None:
        await wait_until_ready(embedder, BASE_MODEL_VERSION)
        probe = await embedder.embed(["dimension probe"], BASE_MODEL_VERSION)
        await store.ensure_version(BASE_MODEL_VERSION, int(probe.vectors.shape[1]), status="building")
        await store.activate(BASE_MODEL_VERSION)
        log.info("activated base model version %s", BASE_MODEL_VERSION)
