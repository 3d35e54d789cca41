from core.fusion import RRF_K, reciprocal_rank_fusion


def test_items_in_both_rankings_rise_and_ties_break_by_id() -> None:
    vector = [("a", 0.9), ("b", 0.8), ("c", 0.7)]
    lexical = [("c", 3.0), ("d", 2.0)]
    fused = reciprocal_rank_fusion(vector, lexical)
    assert [item for item, _ in fused] == ["c", "a", "b", "d"]
    assert fused[0][1] == 1 / (RRF_K + 3) + 1 / (RRF_K + 1)
    # b and d both rank second in one list: equal scores, ordered by id
    assert fused[2][1] == fused[3][1]
