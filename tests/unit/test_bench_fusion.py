"""bench.fusion_quality's in-process BM25 and its reciprocal-rank-fusion baseline."""

from __future__ import annotations

import math

import numpy as np

from bench.fusion_quality import bm25_scores, rrf, session_labels, top
from core.adapters.pgvector.bm25 import K1, B


def test_bm25_matches_the_formula_by_hand() -> None:
    docs = [{"fox": 2, "red": 1}, {"dog": 1}, {"fox": 1, "dog": 1, "lazi": 2}]
    scores = bm25_scores(docs, [["fox", "dog"], ["cat"]])
    n, mean_length = 3, (3 + 1 + 4) / 3

    def part(df: int, tf: int, length: int) -> float:
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        return idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * length / mean_length))

    expected = [part(2, 2, 3), part(2, 1, 1), part(2, 1, 4) + part(2, 1, 4)]
    assert np.allclose(scores[0], expected)
    assert not scores[1].any()  # no document holds the term


def test_top_and_the_rrf_baseline() -> None:
    ids = ["a", "b", "c", "d"]
    assert top(np.array([0.1, 0.9, 0.5, 0.3]), ids, depth=2) == [("b", 0.9), ("c", 0.5)]
    fused = rrf([("a", 0.9), ("b", 0.8)], [("b", 3.0), ("c", 1.0)])
    assert [item for item, _ in fused] == ["b", "a", "c"]
    assert fused[0][1] == 1 / 62 + 1 / 61


def test_session_labels_score_weights_on_clicks_with_and_without_the_unshown_items() -> None:
    """The session showed x and a (the vector top 2) and clicked a; u is relevant but was never
    shown, so no click says so. BM25 ranks u, a, x: on clicks alone u counts as a miss above a;
    condensed to what was shown, BM25 puts a first. A query whose relevant item was not shown
    has no click and no score."""
    vector = [("x", 0.9), ("a", 0.8), ("y", 0.1)]
    keyword = [("u", 9.0), ("a", 8.0), ("x", 1.0)]
    labels = session_labels([vector, vector], [keyword, keyword], {"q1": {"a": 1, "u": 1}, "q2": {"y": 1}},
                            shown_k=2)
    assert labels["queries_with_clicks"] == 1
    second = round(1 / math.log2(3), 4)  # the clicked item at rank 2
    assert labels["clicks"][0.0] == second == labels["clicks"][1.0]
    assert labels["clicks_condensed"][0.0] == 1.0 and labels["clicks_condensed"][1.0] == second
