"""`flywheel bench fill` on the real PostgreSQL and Triton: a tiny fill (vectors from Triton's
bulk lane, COPY into items and the active version's chunk table) is searchable through the
gateway, its HNSW results match the exact scan, BM25 counts the imported items, and a tenant
that has items is refused unless the fill replaces them (tenant-scoped: another tenant's items
stay)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from bench.corpus import synthetic_corpus
from bench.fill import FillConfig, FillRefused, compare_index_builds, run_fill
from bench.fill_texts import fill_docs
from bench.progress import make_progress
from bench.stats import recall_at_k
from core.adapters.pgvector import PgVectorStore
from core.adapters.triton_embedder import TritonEmbedder
from core.bootstrap import build_chunker, ensure_initial_version
from core.config import Settings
from core.domain import ChunkVectors, Item
from infra.process import Component
from tests.conftest import gateway_with_keys

pytestmark = pytest.mark.integration

TENANT, OTHER = f"fill-{uuid.uuid4().hex[:8]}", f"fill-other-{uuid.uuid4().hex[:8]}"
KEYS = {"search": (TENANT, ["search"])}
SECRET = {"search": f"key-fill-{uuid.uuid4().hex}"}
N = 300


@pytest.fixture(scope="module")
def gateway(
    test_settings: Settings, kafka: Component, postgres: Component, mongodb: Component, triton: Component
) -> Iterator[str]:
    yield from gateway_with_keys(test_settings, KEYS, SECRET)


async def bm25_docs(store: PgVectorStore, tenant: str) -> int:
    async with store.pool.connection() as conn:
        row = await (await conn.execute(
            "SELECT coalesce(sum(docs), 0) FROM bm25_stats WHERE tenant = %s", (tenant,))).fetchone()
    return int(row[0]) if row else 0


async def test_a_fill_is_searchable_exactly_and_lexically(
    test_settings: Settings, store: PgVectorStore, embedder: TritonEmbedder, gateway: str,
) -> None:
    await ensure_initial_version(store, embedder)
    version = await store.active_version(TENANT)
    assert version is not None
    # Another tenant's item in the same version's table: the fill must leave it alone.
    other = synthetic_corpus(1)[0]
    chunks = build_chunker(test_settings).split_item(other.title, other.text, other.metadata)
    vectors = (await embedder.embed(chunks, version)).vectors
    await store.apply({version: [ChunkVectors(Item(OTHER, other.id, other.title, other.text, {}, 1),
                                              chunks, vectors)]}, [])

    report = await run_fill(test_settings, FillConfig(TENANT, N), make_progress(False))
    assert report["items"] == N and report["chunks"] == N and report["model_version"] == version
    # Other tenants' chunks share the table: their index is kept, rows inserted into it.
    assert report["index_strategy"] == "insert"
    assert await bm25_docs(store, TENANT) == N

    docs = fill_docs(N)
    recalls = []
    for doc in docs[:20]:
        query = (await embedder.embed([doc.text], version, lane="query")).vectors[0]
        approx = await store.vector_search(version, TENANT, query, 10, {})
        exact = await store.exact_search(version, TENANT, query, 10)
        recalls.append(recall_at_k([i for i, _ in approx], [i for i, _ in exact], 10))
    assert sum(recalls) / len(recalls) >= 0.95, recalls

    lexical = await store.text_search(TENANT, docs[7].text, 10, {})
    assert docs[7].id in [item for item, _ in lexical]

    async with httpx.AsyncClient(base_url=gateway, timeout=60) as client:
        found = await client.post("/v1/search", json={"query": docs[3].text, "k": 5},
                                  headers={"Authorization": f"Bearer {SECRET['search']}"})
    assert found.status_code == 200, found.text
    assert docs[3].id in [hit["id"] for hit in found.json()["results"]]

    compared = await compare_index_builds(store, version, TENANT)  # on temporary copies
    assert compared["rows"] == N and await store.count_items(TENANT) == N

    with pytest.raises(FillRefused, match="--replace"):
        await run_fill(test_settings, FillConfig(TENANT, 10), make_progress(False))
    assert await store.count_items(TENANT) == N

    replaced = await run_fill(test_settings, FillConfig(TENANT, 40, replace=True), make_progress(False))
    assert replaced["replaced_items"] == N and replaced["items"] == 40
    assert await bm25_docs(store, TENANT) == 40
    assert await store.count_items(OTHER) == 1
    assert other.id in [item for item, _ in await store.vector_search(version, OTHER, vectors[0], 1, {})]
