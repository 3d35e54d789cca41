"""Rank fusion for hybrid search: several rankings of item ids merged into one (pure)."""

from __future__ import annotations

RRF_K = 60


def reciprocal_rank_fusion(*rankings: list[tuple[str, float]], k: int = RRF_K) -> list[tuple[str, float]]:
    """Reciprocal rank fusion: each item scores the sum of 1 / (k + rank) over the rankings it
    appears in; ties are broken by id so the order is stable."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, (item_id, _) in enumerate(ranking, start=1):
            scores[item_id] = scores.get(item_id, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))
