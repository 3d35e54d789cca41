"""CandidateRanker over the served index: the query and the positives embedded by Triton with
the tenant's active version, candidates from that version's pgvector table."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import numpy as np

from core.ports import Embedder, VectorStore


class IndexRanker:
    def __init__(self, store: VectorStore, embedder: Embedder,
                 version_of: Callable[[str], Awaitable[str | None]]) -> None:
        self.store = store
        self.embedder = embedder
        self.version_of = version_of  # the version a tenant's searches use

    async def rank(self, tenant: str, query: str, depth: int, positives: dict[str, str]
                   ) -> tuple[list[tuple[str, float]], dict[str, float]]:
        version = await self.version_of(tenant)
        if version is None:  # nothing indexed yet: nothing to mine
            return [], dict.fromkeys(positives, 1.0)
        ids = list(positives)
        # Bulk lane: mining is background work, searches go first.
        embedded = await self.embedder.embed([query, *(positives[i] for i in ids)], version)
        vectors = np.asarray(embedded.vectors, dtype=np.float32)
        scores = vectors[1:] @ vectors[0]  # L2-normalised: cosine
        ranked = await self.store.vector_search(version, tenant, vectors[0], depth, {})
        return ranked, {item: float(score) for item, score in zip(ids, scores, strict=True)}
