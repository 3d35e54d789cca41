"""Offline evaluation on held-out sessions: rank each tenant's candidate pool by cosine."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from core.training.dataset import EvalQuery
from core.training.metrics import mean_metrics

# Texts -> L2-normalised vectors, one row per text.
Encode = Callable[[list[str]], np.ndarray]
K = 10


def rank_pool(query_vectors: np.ndarray, pool_vectors: np.ndarray, pool_ids: Sequence[str], k: int = K
              ) -> list[list[str]]:
    """For each query, the ids of the k pool items most similar by cosine, best first
    (ties broken by pool order, so the ranking is deterministic)."""
    scores = query_vectors @ pool_vectors.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[pool_ids[i] for i in row] for row in order]


def evaluate(encode: Encode, queries: Sequence[EvalQuery], pools: dict[str, dict[str, str]]
             ) -> dict[str, float]:
    """nDCG@10, MRR@10 and Recall@10 averaged over the queries (clicked items are relevant)."""
    rankings: list[tuple[list[str], frozenset[str]]] = []
    for tenant, pool in sorted(pools.items()):
        mine = [q for q in queries if q.tenant == tenant]
        if not mine or not pool:
            continue
        ids = list(pool)
        pool_vectors = encode([pool[i] for i in ids])
        query_vectors = encode([q.query for q in mine])
        for ranked, q in zip(rank_pool(query_vectors, pool_vectors, ids), mine, strict=True):
            rankings.append((ranked, q.relevant))
    metrics = mean_metrics(rankings, K)
    metrics["queries"] = float(len(rankings))
    return metrics
