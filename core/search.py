"""The one search function, shared by the gateway and the CLI."""

from __future__ import annotations

import time

from core.domain import SearchHit, SearchQuery, SearchResult
from core.fusion import reciprocal_rank_fusion
from core.ports import Embedder, VectorStore

# Candidates of each ranking that hybrid search fuses (reciprocal rank fusion).
FUSION_DEPTH = 100


class NoActiveModel(RuntimeError):
    """Nothing has been indexed yet: there is no active model version to search."""


async def search(query: SearchQuery, store: VectorStore, embedder: Embedder) -> SearchResult:
    timings: dict[str, float] = {}
    began = time.perf_counter()
    version = query.version or await store.active_version()
    if version is None:
        raise NoActiveModel("no model version is active yet; index some content first")
    embedded = await embedder.embed([query.text], version, lane="query")
    timings["embed_ms"] = (time.perf_counter() - began) * 1000

    began = time.perf_counter()
    # Hybrid fuses the two rankings over the same candidate depth whatever k (up to it), so
    # the first results do not depend on k; vector search does the same inside the store.
    depth = query.k if query.mode == "vector" else max(query.k, FUSION_DEPTH)
    ranked = await store.vector_search(version, query.tenant, embedded.vectors[0], depth, query.filters)
    if query.mode == "hybrid":
        lexical = await store.text_search(query.tenant, query.text, depth, query.filters)
        ranked = reciprocal_rank_fusion(ranked, lexical)
    ranked = ranked[: query.k]
    described = await store.describe(query.tenant, [item_id for item_id, _ in ranked])
    timings["search_ms"] = (time.perf_counter() - began) * 1000

    hits = [
        SearchHit(item_id, score, *described[item_id])
        for item_id, score in ranked
        if item_id in described  # deleted between the two reads
    ]
    return SearchResult(hits, version, query.mode, timings)
