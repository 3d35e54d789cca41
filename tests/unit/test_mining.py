"""Negatives mined from the index: the selection rules and how the dataset takes them."""

from __future__ import annotations

from core.sessions import SessionEventModel
from core.training.dataset import DatasetBuilder, DatasetConfig, Judged, is_eval_session
from core.training.mining import MiningConfig, select_negatives
from tests.unit.test_sessions_fold import click, search
from tests.unit.test_training_data import TEXTS, repo_with
from tests.unit.training_fakes import FakeItemTexts


def test_selection_skips_the_positive_clicked_items_and_candidates_close_to_the_positive() -> None:
    ranked = [("p", 0.9), ("clicked", 0.85), ("twin", 0.8), ("x", 0.7), ("y", 0.6), ("z", 0.5)]
    config = MiningConfig(per_pair=2, max_ratio=0.95)
    # 0.8 >= 0.95 * 0.82: "twin" is taken for an unlabelled relevant item.
    chosen, skipped = select_negatives(ranked, "p", 0.82, frozenset({"clicked"}), config)
    assert chosen == ["x", "y"] and skipped == 1
    # Not clicked for this query, and below 0.95 * 0.95: a negative.
    assert select_negatives(ranked, "p", 0.95, frozenset(), MiningConfig(per_pair=1)) == (["clicked"], 0)
    # A positive the model scores low leaves nothing below it to mine but what ranks lower still.
    assert select_negatives(ranked, "p", 0.3, frozenset(), config) == ([], 5)


class FakeRanker:
    """Ranks items by a fixed score table, whatever the query; counts the calls."""

    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores
        self.calls: list[tuple[str, str]] = []

    async def rank(self, tenant: str, query: str, depth: int, positives: dict[str, str]
                   ) -> tuple[list[tuple[str, float]], dict[str, float]]:
        self.calls.append((tenant, query))
        ranked = sorted(self.scores.items(), key=lambda pair: -pair[1])[:depth]
        return ranked, {item: self.scores[item] for item in positives}


async def test_the_dataset_gains_mined_triples_for_training_queries_only() -> None:
    sessions: dict[str, list[SessionEventModel]] = {
        f"s{i}": [search(f"s{i}", f"q{i}", ["a", "b"]), click(f"s{i}", "b", 2)] for i in range(20)}
    repo = await repo_with(sessions)
    # b (the click) 0.6; e and f rank above it but close (>= 0.95 * 0.6 is 0.57): only g, h qualify.
    ranker = FakeRanker({"e": 0.9, "b": 0.6, "f": 0.58, "g": 0.5, "h": 0.4, "a": 0.3})
    config = DatasetConfig(eval_fraction=0.3, session_batch=4)
    data = await DatasetBuilder(repo, FakeItemTexts(TEXTS), config, ranker,
                                MiningConfig(per_pair=2, max_ratio=0.95)).build()
    s = data.stats
    train_queries = {f"q{i}" for i in range(20) if not is_eval_session(f"default/s{i}", 0.3)}
    assert {query for _, query in ranker.calls} == train_queries
    assert s.mined_queries == len(train_queries) and s.mined_negatives == 2 * len(train_queries)
    assert s.mined_skipped_close_to_positive == 2 * len(train_queries)  # e and f, each query
    mined = {(ex.anchor, ex.negative) for ex in data.triples if ex.negative != "text of a"}
    assert mined == {(q, f"text of {n}") for q in train_queries for n in "gh"}
    # Shown-above negatives stay: "a" was shown above the click on "b".
    assert {ex.anchor for ex in data.triples if ex.negative == "text of a"} == train_queries
    assert s.triples == len(data.triples) == 3 * len(train_queries)


async def test_an_item_clicked_for_the_query_in_any_session_is_never_a_negative() -> None:
    sessions: dict[str, list[SessionEventModel]] = {
        f"s{i}": [search(f"s{i}", "q", ["a", "b", "c"]), click(f"s{i}", "abc"[i % 3], 1)] for i in range(12)}
    repo = await repo_with(sessions)
    ranker = FakeRanker({"a": 0.5, "b": 0.5, "c": 0.5, "d": 0.2})
    data = await DatasetBuilder(repo, FakeItemTexts(TEXTS), DatasetConfig(eval_fraction=0.0), ranker,
                                MiningConfig(per_pair=3, max_ratio=0.95)).build()
    # Neither mined nor shown-above: "a" was shown above "b" but clicked in other sessions.
    assert {ex.negative for ex in data.triples} == {"text of d"}
    assert data.stats.mined_negatives == 3  # one per positive: a, b and c
    assert data.stats.negatives_clicked_elsewhere > 0


async def test_mining_off_asks_nothing() -> None:
    sessions: dict[str, list[SessionEventModel]] = {"s": [search("s", "q", ["a"]), click("s", "a", 1)]}
    ranker = FakeRanker({"a": 0.5, "d": 0.1})
    repo = await repo_with(sessions)
    data = await DatasetBuilder(repo, FakeItemTexts(TEXTS), DatasetConfig(eval_fraction=0.0), ranker,
                                MiningConfig(per_pair=0)).build()
    assert ranker.calls == [] and data.stats.mined_negatives == 0 and data.triples == []


async def test_judged_pairs_graded_zero_negatives_and_a_held_out_dataset() -> None:
    sessions: dict[str, list[SessionEventModel]] = {
        f"s{i}": [search(f"s{i}", "clicked", ["a", "b"]), click(f"s{i}", "b", 2)] for i in range(10)}
    repo = await repo_with(sessions)
    ranker = FakeRanker({"e": 0.9, "a": 0.5, "g": 0.2})
    judged = [Judged("wanted", "c", 2.0), Judged("wanted", "d", 0.0), Judged("wanted", "gone", 1.0)]
    held_out = [Judged("test", "f", 1.0), Judged("test", "h", 0.0), Judged("empty", "h", 0.0)]
    data = await DatasetBuilder(repo, FakeItemTexts(TEXTS), DatasetConfig(eval_fraction=0.5), ranker,
                                MiningConfig(per_pair=0, depth=2)).build(judged=judged, held_out=held_out)
    s = data.stats
    # A held-out dataset replaces held-out sessions: every session trains.
    assert s.eval_sessions == 0 and s.train_sessions == 10
    assert s.judged_pairs == 1 and s.judged_negatives == 1 and s.judged_missing_items == 1
    assert ("wanted", "text of c", "text of d") in {(e.anchor, e.positive, e.negative) for e in data.triples}
    # Evaluated on the uploaded queries with a relevant item; the pool adds the ranker's top 2.
    assert [(q.query, q.relevant, q.judged) for q in data.eval_queries] == [("test", frozenset({"f"}), None)]
    assert s.judged_eval_queries == 1 and set(data.pools["default"]) == {"f", "h", "e", "a"}


async def test_datasets_alone_read_no_session() -> None:
    class NoSessions:
        def iter_sessions(self, *args: object) -> object:
            raise AssertionError("sessions read")

    judged = [Judged("q", "a"), Judged("q", "b")]
    data = await DatasetBuilder(NoSessions(), FakeItemTexts(TEXTS), DatasetConfig()).build(  # type: ignore[arg-type]
        use_sessions=False, judged=judged)
    assert {e.positive for e in data.pairs} == {"text of a", "text of b"} and data.stats.sessions == 0
