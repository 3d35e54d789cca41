"""Rank fusion for hybrid search: the vector and BM25 rankings merged into one (pure)."""

from __future__ import annotations

# The vector ranking's share of the fused score, BM25's the rest. Equal shares: on scifact-dev
# (docs/benchmarks.md, "Fusing BM25 and vectors") every weight from 0.2 to 0.6 beat reciprocal
# rank fusion on the test split, and 0.5 scored best on the train split.
VECTOR_WEIGHT = 0.5


def min_max(ranking: list[tuple[str, float]]) -> dict[str, float]:
    """Each item's score rescaled to [0, 1] over the ranking (1.0 for all when they are equal)."""
    if not ranking:
        return {}
    scores = [score for _, score in ranking]
    low, high = min(scores), max(scores)
    return {item_id: (score - low) / (high - low) if high > low else 1.0 for item_id, score in ranking}


def convex_fusion(
    vector: list[tuple[str, float]], keyword: list[tuple[str, float]], weight: float = VECTOR_WEIGHT,
) -> list[tuple[str, float]]:
    """A convex combination of min-max normalised scores: each item scores
    `weight * vector + (1 - weight) * keyword`, a part counting 0 where its ranking does not
    hold the item. Unlike reciprocal rank fusion it keeps how far apart the scores are, not
    only their order. Ties are broken by id so the order is stable."""
    by_vector, by_keyword = min_max(vector), min_max(keyword)
    scores = {item_id: weight * by_vector.get(item_id, 0.0) + (1 - weight) * by_keyword.get(item_id, 0.0)
              for item_id in by_vector.keys() | by_keyword.keys()}
    return sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))
