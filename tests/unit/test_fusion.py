from core.fusion import VECTOR_WEIGHT, convex_fusion, min_max


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
