from core.fusion import (
    FUSION_MIN_GAIN,
    FUSION_MIN_QUERIES,
    VECTOR_WEIGHT,
    WEIGHT_GRID,
    FusionChoice,
    choose_weight,
    convex_fusion,
    min_max,
    score_parts,
    weight_metric,
)
from core.training.evaluation import Fused, fusion_metrics


def test_scores_are_rescaled_over_each_ranking() -> None:
    assert min_max([("a", 0.9), ("b", 0.7), ("c", 0.5)]) == {"a": 1.0, "b": 0.4999999999999999, "c": 0.0}
    assert min_max([("a", 2.0), ("b", 2.0)]) == {"a": 1.0, "b": 1.0}  # all equal: none is last
    assert min_max([]) == {}


def test_the_fused_score_keeps_how_far_apart_the_scores_are() -> None:
    """`d` is far ahead in BM25 and absent from the vector ranking; `b` is a distant second in
    both. Reciprocal rank fusion would put `b` (2 / 62) above `d` (1 / 61); the convex
    combination keeps `d`'s lead, and an item in one ranking only counts 0 for the other."""
    vector = [("a", 0.81), ("b", 0.40), ("c", 0.39)]
    keyword = [("d", 12.0), ("b", 1.5), ("a", 1.0)]
    fused = dict(convex_fusion(vector, keyword))
    assert VECTOR_WEIGHT == 0.5
    assert fused["a"] == 0.5 * 1.0 + 0.5 * 0.0
    assert fused["d"] == 0.5 * 0.0 + 0.5 * 1.0
    assert abs(fused["b"] - (0.5 * (0.01 / 0.42) + 0.5 * (0.5 / 11.0))) < 1e-12
    assert fused["c"] == 0.0
    assert [item for item, _ in convex_fusion(vector, keyword)] == ["a", "d", "b", "c"]


def test_the_weight_moves_the_balance_and_ties_break_by_id() -> None:
    vector = [("a", 0.9), ("b", 0.1)]
    keyword = [("b", 5.0), ("a", 1.0)]
    assert [item for item, _ in convex_fusion(vector, keyword, weight=0.8)] == ["a", "b"]
    assert [item for item, _ in convex_fusion(vector, keyword, weight=0.2)] == ["b", "a"]
    assert convex_fusion(vector, keyword) == [("a", 0.5), ("b", 0.5)]  # a tie, ordered by id


def test_one_ranking_alone_keeps_its_order() -> None:
    vector = [("a", 0.9), ("b", 0.5), ("c", 0.2)]
    assert [item for item, _ in convex_fusion(vector, [])] == ["a", "b", "c"]
    assert [item for item, _ in convex_fusion([], vector)] == ["a", "b", "c"]


def test_the_best_weight_wins_and_ties_stay_nearest_the_default() -> None:
    assert choose_weight({0.2: 0.6, 0.5: 0.55, 0.8: 0.5}) == 0.2
    assert choose_weight({0.3: 0.6, 0.4: 0.6, 0.7: 0.6}) == 0.4  # equal: the one nearest 0.5
    assert choose_weight({0.4: 0.6, 0.6: 0.6}) == 0.4  # equally near: the lower, deterministic
    assert choose_weight(dict.fromkeys(WEIGHT_GRID, 0.0)) == VECTOR_WEIGHT


def test_the_default_weight_stays_unless_the_best_beats_it_by_the_minimum_gain() -> None:
    assert choose_weight({0.5: 0.80, 0.6: 0.805}, min_gain=0.01) == 0.5
    assert choose_weight({0.5: 0.80, 0.6: 0.81}, min_gain=0.01) == 0.6  # exactly the minimum moves it
    assert choose_weight({0.4: 0.80, 0.5: 0.70, 0.6: 0.805}, min_gain=0.01) == 0.6


def relevant_first_in(ranking_of: str, n: int) -> list[Fused]:
    """n queries whose relevant item `r` tops one ranking and is last in the other."""
    good = [("r", 0.9), ("x", 0.5), ("y", 0.1)]
    bad = [("x", 9.0), ("y", 5.0), ("r", 1.0)]
    vector, keyword = (good, bad) if ranking_of == "vector" else (bad, good)
    return [(score_parts(vector, keyword), frozenset({"r"}), None) for _ in range(n)]


def test_items_no_session_showed_do_not_count_against_a_weight() -> None:
    """BM25 puts `u`, never shown, first and the clicked `r` second; the vectors put `x`, shown
    and passed over, above `r`. Counted as irrelevant, `u` makes BM25 look as bad as the vectors;
    condensed to what was shown, BM25 ranks `r` first among the judged items."""
    vector = [("x", 0.9), ("r", 0.8), ("y", 0.1)]
    keyword = [("u", 9.0), ("r", 8.0), ("x", 1.0)]
    parts = score_parts(vector, keyword)
    unknown = fusion_metrics([(parts, frozenset({"r"}), None)] * 20, FusionChoice())
    judged = fusion_metrics([(parts, frozenset({"r"}), frozenset({"r", "x", "y"}))] * 20, FusionChoice())
    assert unknown[weight_metric(0.0)] == unknown[weight_metric(1.0)] < 1.0
    assert judged[weight_metric(0.0)] == 1.0 and judged[weight_metric(1.0)] < 1.0


def test_the_held_out_queries_choose_the_weight_once_there_are_enough() -> None:
    enough = FusionChoice(min_queries=FUSION_MIN_QUERIES)
    chosen = fusion_metrics(relevant_first_in("keyword", FUSION_MIN_QUERIES), enough)
    assert chosen["fusion_weight"] < 0.5 and chosen["hybrid_ndcg_at_10"] == 1.0
    assert chosen["fusion_queries"] == FUSION_MIN_QUERIES
    # The score at every weight is reported: BM25 alone (0) finds `r` first, vectors alone (1) last.
    assert chosen[weight_metric(0.0)] == 1.0 and chosen[weight_metric(1.0)] == 0.5
    assert chosen[weight_metric(0.5)] < 1.0
    assert len([name for name in chosen if "_at_10_at_" in name]) == len(WEIGHT_GRID)
    assert fusion_metrics(relevant_first_in("vector", 30), enough)["fusion_weight"] > 0.5
    # Too few queries to trust: the default, scored at the default.
    few = fusion_metrics(relevant_first_in("keyword", 3), enough)
    assert few["fusion_weight"] == VECTOR_WEIGHT and few["hybrid_ndcg_at_10"] < 1.0


def test_a_gain_below_the_minimum_keeps_the_default() -> None:
    queries = relevant_first_in("keyword", FUSION_MIN_QUERIES)
    gain = fusion_metrics(queries, FusionChoice())["hybrid_ndcg_at_10"] - fusion_metrics(
        queries, FusionChoice(min_gain=1.0))["hybrid_ndcg_at_10"]
    assert gain > FUSION_MIN_GAIN  # what the default setting lets through
    kept = fusion_metrics(queries, FusionChoice(min_gain=gain + 0.01))
    assert kept["fusion_weight"] == VECTOR_WEIGHT and kept["hybrid_ndcg_at_10"] == kept[weight_metric(0.5)]
