"""Offline evaluation on held-out sessions: rank each tenant's candidate pool by cosine, and
fuse that ranking with each query's BM25 ranking to choose the version's fusion weight."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from core.fusion import (
    DEFAULT_FUSION_CHOICE,
    FUSION_DEPTH,
    VECTOR_WEIGHT,
    WEIGHT_GRID,
    FusionChoice,
    Ranking,
    ScoreParts,
    choose_weight,
    fuse_parts,
    score_parts,
    weight_metric,
)
from core.training.dataset import EvalQuery
from core.training.metrics import mean_metrics, ndcg_at_k

# Texts -> L2-normalised vectors, one row per text.
Encode = Callable[[list[str]], np.ndarray]
# A held-out query for the fusion weight: both rankings' parts, its relevant items, its judged ones.
Fused = tuple[ScoreParts, frozenset[str], frozenset[str] | None]
K = 10


def rank_pool(query_vectors: np.ndarray, pool_vectors: np.ndarray, pool_ids: Sequence[str], k: int = K
              ) -> list[Ranking]:
    """For each query, the k pool items most similar by cosine as (id, cosine), best first
    (ties broken by pool order, so the ranking is deterministic)."""
    scores = query_vectors @ pool_vectors.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[(pool_ids[i], float(row_scores[i])) for i in row]
            for row, row_scores in zip(order, scores, strict=True)]


def evaluate(encode: Encode, queries: Sequence[EvalQuery], pools: dict[str, dict[str, str]],
             fusion: FusionChoice = DEFAULT_FUSION_CHOICE) -> dict[str, float]:
    """nDCG@10, MRR@10 and Recall@10 of the pool ranking, averaged over the queries (clicked
    items are relevant). Where queries carry their BM25 ranking (`EvalQuery.keyword`), also
    `hybrid_ndcg_at_10`, `fusion_weight`, `fusion_queries` and the score at each weight
    (fusion_metrics)."""
    rankings: list[tuple[list[str], frozenset[str]]] = []
    fused: list[Fused] = []
    for tenant, pool in sorted(pools.items()):
        mine = [q for q in queries if q.tenant == tenant]
        if not mine or not pool:
            continue
        ids = list(pool)
        pool_vectors = encode([pool[i] for i in ids])
        query_vectors = encode([q.query for q in mine])
        for ranked, q in zip(rank_pool(query_vectors, pool_vectors, ids, FUSION_DEPTH), mine, strict=True):
            rankings.append(([item for item, _ in ranked[:K]], q.relevant))
            if q.keyword:
                fused.append((score_parts(ranked, list(q.keyword)), q.relevant, q.judged))
    metrics = mean_metrics(rankings, K)
    metrics["queries"] = float(len(rankings))
    if fused:
        metrics.update(fusion_metrics(fused, fusion))
    return metrics


def condensed(ranking: Ranking, judged: frozenset[str] | None) -> list[str]:
    """The top K of a ranking, keeping only the items whose relevance is known (all when
    `judged` is None)."""
    return [item for item, _ in ranking if judged is None or item in judged][:K]


def fusion_metrics(fused: Sequence[Fused], fusion: FusionChoice) -> dict[str, float]:
    """Hybrid search's nDCG@10 at each weight of WEIGHT_GRID (`weight_metric`), as search fuses
    (the pool's top FUSION_DEPTH with the query's BM25 top FUSION_DEPTH), each fused ranking
    condensed to the query's judged items (EvalQuery.judged). The best weight
    becomes the version's `fusion_weight` when at least `fusion.min_queries` queries chose it
    and it beats VECTOR_WEIGHT by `fusion.min_gain` (else VECTOR_WEIGHT); `hybrid_ndcg_at_10`
    is the score at that weight."""
    by_weight = {
        weight: sum(ndcg_at_k(condensed(fuse_parts(parts, weight), judged), relevant, K)
                    for parts, relevant, judged in fused) / len(fused)
        for weight in WEIGHT_GRID
    }
    weight = (choose_weight(by_weight, VECTOR_WEIGHT, fusion.min_gain) if len(fused) >= fusion.min_queries
              else VECTOR_WEIGHT)
    return {"hybrid_ndcg_at_10": by_weight[weight], "fusion_weight": weight,
            "fusion_queries": float(len(fused)),
            **{weight_metric(w): score for w, score in by_weight.items()}}
