"""Dataset building, metrics, evaluation ranking, the gate and batching (no model, no I/O)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from core.fusion import FusionChoice
from core.sessions import SessionEventModel, fold
from core.training.dataset import (
    DatasetBuilder,
    DatasetConfig,
    Example,
    Judgement,
    hard_negatives,
    is_eval_session,
    judgements,
)
from core.training.evaluation import evaluate, rank_pool
from core.training.finetune import make_batches
from core.training.gate import decide
from core.training.metrics import mean_metrics, mrr_at_k, ndcg_at_k, recall_at_k
from tests.unit.test_sessions_fold import NOW, click, search
from tests.unit.training_fakes import FakeItemTexts, FakeSessionRepo

TEXTS = {("default", i): f"text of {i}" for i in "abcdefgh"}


async def repo_with(sessions: dict[str, list[SessionEventModel]]) -> FakeSessionRepo:
    repo = FakeSessionRepo()
    for events in sessions.values():
        doc, _ = fold(None, events, NOW)
        repo.docs[doc["_id"]] = {**doc, "revision": 1}
    return repo


def test_hard_negatives_are_the_unclicked_items_ranked_above_a_click() -> None:
    j = Judgement("q", [("b", 2), ("d", 4)], [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)])
    assert hard_negatives(j, 4, 5) == ["a", "c"]
    assert hard_negatives(j, 4, 1) == ["a"]
    assert hard_negatives(j, 2, 5) == ["a"]
    assert hard_negatives(j, 1, 5) == []


def test_judgements_take_ranks_from_the_shown_results() -> None:
    doc, _ = fold(None, [search("s", "q", ["a", "b", "c"]), click("s", "c", 9)], NOW)
    assert judgements(doc) == [Judgement("q", [("c", 3)], [("a", 1), ("b", 2), ("c", 3)])]


def test_the_split_is_by_session_and_deterministic() -> None:
    keys = [f"default/s{i}" for i in range(2000)]
    held = [k for k in keys if is_eval_session(k, 0.2)]
    assert 300 < len(held) < 500
    assert held == [k for k in keys if is_eval_session(k, 0.2)]
    assert not any(is_eval_session(k, 0.0) for k in keys)


async def test_pairs_triples_dedup_and_eval_sessions() -> None:
    sessions: dict[str, list[SessionEventModel]] = {
        f"s{i}": [search(f"s{i}", "q", ["a", "b", "c"]), click(f"s{i}", "c", 3)] for i in range(40)}
    sessions["lonely"] = [search("lonely", "r", ["d", "e"]), click("lonely", "d", 1)]
    sessions["noclick"] = [search("noclick", "z", ["a"])]
    sessions["gone"] = [search("gone", "g", ["zz", "a"]), click("gone", "zz", 1)]
    repo = await repo_with(sessions)
    texts = FakeItemTexts(TEXTS)
    data = await DatasetBuilder(repo, texts, DatasetConfig(eval_fraction=0.25, session_batch=8)).build()
    s = data.stats
    assert s.sessions == 43 and s.sessions_with_clicks == 42
    assert s.train_sessions + s.eval_sessions == 42 and s.eval_sessions > 0
    # 40 identical sessions: one pair, two triples (a and b ranked above the click on c).
    by_query = {ex.anchor for ex in data.triples}
    assert by_query == {"q"} and len(data.triples) == 2
    assert {ex.negative for ex in data.triples} == {"text of a", "text of b"}
    eval_keys = {k for k in repo.docs if is_eval_session(k, 0.25)}
    if "default/lonely" not in eval_keys:
        assert data.pairs == [Example("r", "text of d")]
    assert all(q.relevant <= set(data.pools["default"]) for q in data.eval_queries)
    if "default/gone" not in eval_keys:
        assert s.missing_items == 1
    # Texts were fetched per batch of sessions, never more than a batch's worth at once.
    assert len(texts.calls) == math.ceil(43 / 8)


async def test_the_example_cap_truncates() -> None:
    sessions: dict[str, list[SessionEventModel]] = {
        f"s{i}": [search(f"s{i}", f"q{i}", ["a", "b"]), click(f"s{i}", "b", 2)] for i in range(50)}
    repo = await repo_with(sessions)
    config = DatasetConfig(eval_fraction=0.0, max_examples=5, max_eval_queries=0, session_batch=4)
    data = await DatasetBuilder(repo, FakeItemTexts(TEXTS), config).build()
    assert data.train_size <= 6 and data.stats.truncated and data.stats.sessions < 50


async def test_a_corpus_is_read_for_the_linear_map_only_when_asked() -> None:
    sessions: dict[str, list[SessionEventModel]] = {"s": [search("s", "q", ["a", "b"]), click("s", "b", 2)]}
    repo = await repo_with(sessions)
    builder = DatasetBuilder(repo, FakeItemTexts(TEXTS), DatasetConfig(eval_fraction=0.0, corpus_items=2))
    plain = await builder.build()
    assert plain.corpus == {} and plain.stats.corpus_items == 0
    data = await builder.build(corpus=True)
    assert list(data.corpus) == ["default"] and len(data.corpus["default"]) == 2
    assert all(TEXTS[("default", i)] == text for i, text in data.corpus["default"].items())
    assert data.stats.corpus_items == 2


def test_metrics_known_values() -> None:
    assert ndcg_at_k(["r"], {"r"}) == 1.0
    assert ndcg_at_k(["x", "r"], {"r"}) == pytest.approx(1 / math.log2(3))
    assert ndcg_at_k(["x", "r", "s"], {"r", "s"}) == pytest.approx(
        (1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    assert ndcg_at_k([*"xxxxxxxxxx", "r"], {"r"}) == 0.0
    assert mrr_at_k(["x", "y", "r"], {"r"}) == pytest.approx(1 / 3)
    assert mrr_at_k(["x"], {"r"}) == 0.0
    assert recall_at_k(["r", "x"], {"r", "s"}) == 0.5
    assert mean_metrics([(["r"], {"r"}), (["x"], {"r"})]) == {
        "ndcg_at_10": 0.5, "mrr_at_10": 0.5, "recall_at_10": 0.5}
    assert mean_metrics([]) == {"ndcg_at_10": 0.0, "mrr_at_10": 0.0, "recall_at_10": 0.0}


def test_rank_pool_and_evaluate_with_a_fake_encoder() -> None:
    pool_vectors = np.eye(3, dtype=np.float32)
    ranked = rank_pool(np.array([[0.1, 0.9, 0.0]], dtype=np.float32), pool_vectors, ["a", "b", "c"], 2)
    assert [[item for item, _ in row] for row in ranked] == [["b", "a"]]
    assert [score for _, score in ranked[0]] == pytest.approx([0.9, 0.1])
    from core.training.dataset import EvalQuery

    vectors = {"qa": [1, 0], "qb": [0, 1], "A": [1, 0], "B": [0.8, 0.6]}

    def encode(texts: list[str]) -> np.ndarray:
        return np.asarray([vectors[t] for t in texts], dtype=np.float32)

    queries = [EvalQuery("t", "qa", frozenset({"a"})), EvalQuery("t", "qb", frozenset({"a"}))]
    metrics = evaluate(encode, queries, {"t": {"a": "A", "b": "B"}})
    assert metrics["mrr_at_10"] == pytest.approx((1 + 0.5) / 2) and metrics["queries"] == 2
    assert "fusion_weight" not in metrics  # no query carries a BM25 ranking
    # With their BM25 rankings (a first for both), the fused ranking puts a first for qb too.
    bm25 = (("a", 3.0), ("b", 1.0))
    fused = evaluate(encode, [EvalQuery(q.tenant, q.query, q.relevant, bm25) for q in queries],
                     {"t": {"a": "A", "b": "B"}}, FusionChoice(min_queries=1))
    assert fused["ndcg_at_10"] < 1.0 and fused["hybrid_ndcg_at_10"] == 1.0
    assert fused["fusion_weight"] == 0.5 and fused["fusion_queries"] == 2


def test_the_gate_is_strict() -> None:
    base = {"ndcg_at_10": 0.5}
    assert not decide(base, {"ndcg_at_10": 0.5}, 0.0).passed
    assert decide(base, {"ndcg_at_10": 0.51}, 0.0).passed
    assert not decide(base, {"ndcg_at_10": 0.55}, 0.05).passed
    assert decide(base, {"ndcg_at_10": 0.56}, 0.05).passed
    assert not decide({"ndcg_at_10": 0.0}, {"ndcg_at_10": 1.0}, 1.0).passed
    assert "does not beat" in decide(base, base, 0.0).reason


def test_batches_never_repeat_a_text() -> None:
    examples = [Example(f"q{i % 7}", f"p{i % 5}", f"n{i % 3}") for i in range(60)]
    batches = make_batches(examples, 4, random.Random(1))
    for batch in batches:
        texts = [t for e in batch for t in (e.anchor, e.positive, e.negative)]
        assert len(texts) == len(set(texts)) and len(batch) <= 4
    assert make_batches(examples, 4, random.Random(1)) == batches
    assert sum(map(len, batches)) == len(examples)


class FakeKeywordSearch:
    """BM25 stand-in: for query "q" it ranks h (no session showed it) above c; nothing else."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, int]] = []

    async def text_search(self, tenant: str, query: str, k: int, filters: dict[str, object]
                          ) -> list[tuple[str, float]]:
        self.asked.append((tenant, query, k))
        return [("h", 7.5), ("c", 2.0)] if query == "q" else []


async def test_held_out_queries_carry_their_bm25_ranking_and_its_items_join_the_pool() -> None:
    sessions: dict[str, list[SessionEventModel]] = {
        f"s{i}": [search(f"s{i}", "q", ["a", "b", "c"]), click(f"s{i}", "c", 3)] for i in range(6)}
    sessions["other"] = [search("other", "r", ["d"]), click("other", "d", 1)]
    keyword = FakeKeywordSearch()
    config = DatasetConfig(eval_fraction=1.0)
    data = await DatasetBuilder(await repo_with(sessions), FakeItemTexts(TEXTS), config,
                                keyword=keyword).build()
    by_query = {q.query: q for q in data.eval_queries}
    assert by_query["q"].keyword == (("h", 7.5), ("c", 2.0)) and by_query["r"].keyword == ()
    assert sorted(keyword.asked) == [("default", "q", 100), ("default", "r", 100)]
    assert data.pools["default"]["h"] == "text of h"  # ranked by BM25 only: now in the pool
    # ... but its relevance is unknown: the judged items are what the sessions showed.
    assert by_query["q"].judged == frozenset({"a", "b", "c"}) and by_query["r"].judged == frozenset({"d"})
    assert data.stats.keyword_eval_queries == 1 and data.stats.keyword_pool_items == 1
    # Without a keyword search the pool is what the sessions showed.
    plain = await DatasetBuilder(await repo_with(sessions), FakeItemTexts(TEXTS), config).build()
    assert "h" not in plain.pools["default"] and all(not q.keyword for q in plain.eval_queries)
