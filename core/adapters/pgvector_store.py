"""Moved: the vector store is the package :mod:`core.adapters.pgvector`. This module only
re-exports it for the modules not yet updated."""

from __future__ import annotations

from core.adapters.pgvector import SCHEMA, PgVectorStore, chunk_table

RRF_K = 60


def reciprocal_rank_fusion(*rankings: list[tuple[str, float]], k: int = RRF_K) -> list[tuple[str, float]]:
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, (item_id, _) in enumerate(ranking, start=1):
            scores[item_id] = scores.get(item_id, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))


__all__ = ["RRF_K", "SCHEMA", "PgVectorStore", "chunk_table", "reciprocal_rank_fusion"]
