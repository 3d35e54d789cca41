"""Rank fusion for hybrid search: the vector and BM25 rankings merged into one (pure)."""

from __future__ import annotations

from dataclasses import dataclass

# The vector ranking's share of the fused score, BM25's the rest, for a version whose training
# chose none (the base model; fewer held-out queries than FUSION_MIN_QUERIES). Equal shares: on
# scifact-dev (docs/benchmarks.md, "Fusing BM25 and vectors") every weight from 0.2 to 0.6
# beat reciprocal rank fusion on the test split, and 0.5 scored best on the train split.
VECTOR_WEIGHT = 0.5
# Candidates of each ranking that hybrid search fuses.
FUSION_DEPTH = 100
# The weights a training run tries on its held-out queries, and how many queries it needs
# before it trusts the best of them over VECTOR_WEIGHT (a handful would swing it to 0 or 1).
WEIGHT_GRID = tuple(round(0.1 * step, 1) for step in range(11))
FUSION_MIN_QUERIES = 20
# ... and how much better than VECTOR_WEIGHT the best must score (mean nDCG@10 over those
# queries). On scifact-dev the weights 0.4 to 0.6 score within 0.006 of each other on both
# splits, and the held-out sessions chose 0.6 where the test split preferred 0.4 to 0.5
# (docs/benchmarks.md): a smaller gain is not evidence that the weight should move.
FUSION_MIN_GAIN = 0.01


@dataclass(frozen=True)
class FusionChoice:
    """When a training run records the weight it found best rather than VECTOR_WEIGHT."""

    min_queries: int = FUSION_MIN_QUERIES
    min_gain: float = FUSION_MIN_GAIN


DEFAULT_FUSION_CHOICE = FusionChoice()

Ranking = list[tuple[str, float]]
# item id -> {"vector": part or None, "keyword": part or None}; a part: score, rank, normalised
ScoreParts = dict[str, dict[str, dict[str, float | int] | None]]


def min_max(ranking: Ranking) -> dict[str, float]:
    """Each item's score rescaled to [0, 1] over the ranking (1.0 for all when they are equal)."""
    if not ranking:
        return {}
    scores = [score for _, score in ranking]
    low, high = min(scores), max(scores)
    return {item_id: (score - low) / (high - low) if high > low else 1.0 for item_id, score in ranking}


def score_parts(vector: Ranking, keyword: Ranking) -> ScoreParts:
    """Per item of either ranking, its `vector` and `keyword` part: score, rank (1-based) and
    the score min-max normalised over that ranking (what the fused score weighs), or null
    where the ranking does not hold it."""
    def ranks(ranking: Ranking) -> dict[str, dict[str, float | int]]:
        normalised = min_max(ranking)
        return {item_id: {"score": score, "rank": rank, "normalised": normalised[item_id]}
                for rank, (item_id, score) in enumerate(ranking, 1)}

    by_vector, by_keyword = ranks(vector), ranks(keyword)
    return {item_id: {"vector": by_vector.get(item_id), "keyword": by_keyword.get(item_id)}
            for item_id in by_vector.keys() | by_keyword.keys()}


def fuse_parts(parts: ScoreParts, weight: float = VECTOR_WEIGHT) -> Ranking:
    """A convex combination of the parts' normalised scores: each item scores
    `weight * vector + (1 - weight) * keyword`, a part counting 0 where its ranking does not
    hold the item. Unlike reciprocal rank fusion it keeps how far apart the scores are, not
    only their order. Ties are broken by id so the order is stable."""
    def normalised(part: dict[str, float | int] | None) -> float:
        return float(part["normalised"]) if part is not None else 0.0

    scores = {item_id: weight * normalised(p["vector"]) + (1 - weight) * normalised(p["keyword"])
              for item_id, p in parts.items()}
    return sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))


def convex_fusion(vector: Ranking, keyword: Ranking, weight: float = VECTOR_WEIGHT) -> Ranking:
    """The two rankings fused as hybrid search fuses them (fuse_parts of their score_parts)."""
    return fuse_parts(score_parts(vector, keyword), weight)


WEIGHT_METRIC_PREFIX = "hybrid_ndcg_at_10_at_"


def weight_metric(weight: float) -> str:
    """The name of hybrid nDCG@10 at one weight of WEIGHT_GRID, e.g. `hybrid_ndcg_at_10_at_0_6`
    for 0.6 (no dot: the name is a key of the task's details, and MongoDB keys hold none)."""
    return f"{WEIGHT_METRIC_PREFIX}{weight:g}".replace(".", "_")


def is_weight_metric(name: str) -> bool:
    """True of weight_metric's names, with or without a `base_`/`candidate_` prefix."""
    return WEIGHT_METRIC_PREFIX in name


def choose_weight(scores: dict[float, float], default: float = VECTOR_WEIGHT, min_gain: float = 0.0) -> float:
    """The weight whose score is highest; among equal scores the one nearest `default`. The
    default stays unless the best beats its score by at least `min_gain`."""
    best = min(scores, key=lambda weight: (-round(scores[weight], 9), abs(weight - default), weight))
    if default in scores and round(scores[best] - scores[default], 9) < min_gain:
        return default
    return best
