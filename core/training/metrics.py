"""Ranking metrics with binary relevance (a clicked item is relevant), cut at k."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence


def ndcg_at_k(ranked: Sequence[str], relevant: Collection[str], k: int = 10) -> float:
    if not relevant:
        return 0.0
    dcg = sum(1.0 / math.log2(i + 2) for i, item in enumerate(ranked[:k]) if item in relevant)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(relevant), k)))
    return dcg / ideal


def mrr_at_k(ranked: Sequence[str], relevant: Collection[str], k: int = 10) -> float:
    for i, item in enumerate(ranked[:k]):
        if item in relevant:
            return 1.0 / (i + 1)
    return 0.0


def recall_at_k(ranked: Sequence[str], relevant: Collection[str], k: int = 10) -> float:
    if not relevant:
        return 0.0
    return len(set(ranked[:k]) & set(relevant)) / len(relevant)


METRICS = {"ndcg_at_10": ndcg_at_k, "mrr_at_10": mrr_at_k, "recall_at_10": recall_at_k}


def mean_metrics(rankings: Iterable[tuple[Sequence[str], Collection[str]]], k: int = 10) -> dict[str, float]:
    """Each metric averaged over (ranking, relevant) pairs; zeros when there are none."""
    totals = dict.fromkeys(METRICS, 0.0)
    count = 0
    for ranked, relevant in rankings:
        count += 1
        for name, metric in METRICS.items():
            totals[name] += metric(ranked, relevant, k)
    return {name: (total / count if count else 0.0) for name, total in totals.items()}


def prefixed(metrics: Mapping[str, float], prefix: str) -> dict[str, float]:
    return {f"{prefix}_{name}": value for name, value in metrics.items()}
