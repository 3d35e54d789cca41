"""The one search function, shared by the gateway and the CLI."""

from __future__ import annotations

import asyncio
import time

from core.domain import SearchHit, SearchQuery, SearchResult
from core.fusion import FUSION_DEPTH, VECTOR_WEIGHT, ScoreParts, fuse_parts, score_parts
from core.ports import Embedder, VectorStore
from core.snippets import BestChunks, Snippets


class NoActiveModel(RuntimeError):
    """Nothing has been indexed yet: there is no active model version to search."""


async def search(
    query: SearchQuery, store: VectorStore, embedder: Embedder, snippets: Snippets | None = None
) -> SearchResult:
    """The query's top k items. With `snippets` (a store that can tell each item's best chunk),
    each hit also carries the text of its chunk closest to the query, read in the same query
    as titles and metadata, for the top k only; hybrid hits carry the parts of their score,
    fused at the weight the version's training chose (VECTOR_WEIGHT if none)."""
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
    parts: ScoreParts = {}
    weight = None
    if query.mode == "hybrid":
        lexical, chosen = await asyncio.gather(
            store.text_search(query.tenant, query.text, depth, query.filters), store.fusion_weight(version))
        weight = VECTOR_WEIGHT if chosen is None else chosen
        parts = score_parts(ranked, lexical)
        ranked = fuse_parts(parts, weight)
    ranked = ranked[: query.k]
    ids = [item_id for item_id, _ in ranked]
    texts: dict[str, str] = {}
    if snippets is not None and isinstance(store, BestChunks):
        views = await store.describe_best(version, query.tenant, embedded.vectors[0], ids, 6 * snippets.chars)
        described = {item_id: (view.title, view.metadata) for item_id, view in views.items()}
        texts = await snippets.of(views, query.text, query.tenant)
    else:
        described = await store.describe(query.tenant, ids)
    timings["search_ms"] = (time.perf_counter() - began) * 1000

    hits = [
        SearchHit(item_id, score, *described[item_id], snippet=texts.get(item_id),
                  score_parts=parts.get(item_id))
        for item_id, score in ranked
        if item_id in described  # deleted between the two reads
    ]
    return SearchResult(hits, version, query.mode, timings, fusion_weight=weight)
