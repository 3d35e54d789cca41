"""Hard negatives mined from the index by the active model, for the training pairs.

For each training query, the active version ranks the tenant's items; a candidate becomes a
negative of a (query, positive) pair when it ranks high, was never clicked or converted for
that query in any session this run read, and scores clearly below the positive
(`score < max_ratio * positive's score`: NV-Retriever's positive-aware filter, which drops
the unlabelled relevant items that rank as high as the labelled one — false negatives).
Pure here; embedding and searching are behind the `CandidateRanker` port.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from core.ports import CandidateRanker


@dataclass(frozen=True)
class MiningConfig:
    per_pair: int = 1  # mined negatives per (query, positive); 0 = off
    depth: int = 30  # candidates ranked per query
    max_ratio: float = 0.95  # a candidate scoring at least this share of the positive's is skipped
    max_queries: int = 5_000  # queries mined per run (the rest keep their shown negatives only)


@dataclass(frozen=True)
class MiningQuery:
    tenant: str
    query: str
    positives: dict[str, str]  # clicked item id -> its text as trained on
    clicked: frozenset[str]  # every item clicked or converted for the query, any session


@dataclass
class MiningOutcome:
    # (tenant, query, positive) -> its mined negatives
    negatives: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)
    queries: int = 0
    skipped_close_to_positive: int = 0


def select_negatives(
    ranked: Sequence[tuple[str, float]], positive: str, positive_score: float,
    clicked: frozenset[str], config: MiningConfig,
) -> tuple[list[str], int]:
    """The mined negatives of one pair, best-ranked first, and how many candidates the
    false-negative filter skipped."""
    chosen: list[str] = []
    skipped = 0
    for item, score in ranked:
        if len(chosen) >= config.per_pair:
            break
        if item == positive or item in clicked:
            continue
        if score >= config.max_ratio * positive_score:
            skipped += 1
            continue
        chosen.append(item)
    return chosen, skipped


async def mine(
    queries: Sequence[MiningQuery], ranker: CandidateRanker, config: MiningConfig,
) -> MiningOutcome:
    """Negatives for every (query, positive) of `queries` (at most `config.max_queries`)."""
    outcome = MiningOutcome()
    if config.per_pair <= 0:
        return outcome
    for q in queries[: config.max_queries]:
        ranked, positive_scores = await ranker.rank(q.tenant, q.query, config.depth, q.positives)
        outcome.queries += 1
        for positive in q.positives:
            chosen, skipped = select_negatives(ranked, positive, positive_scores[positive], q.clicked, config)
            outcome.skipped_close_to_positive += skipped
            if chosen:
                outcome.negatives[(q.tenant, q.query, positive)] = chosen
    return outcome
