"""A/B assignment, split validation and the online metrics (CTR, MRR of the first click)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from core.ab import (
    ABSplit,
    InvalidSplit,
    bucket,
    choose_version,
    collect_online_metrics,
    configure_split,
    online_metrics,
    traffic_percent,
)
from core.domain import Expected


def test_assignment_is_deterministic_per_session() -> None:
    split = ABSplit("2", 50.0)
    for i in range(100):
        sid = f"session-{i}"
        assert choose_version("1", split, sid) == choose_version("1", split, sid)
        assert bucket(sid) == bucket(sid)


def test_traffic_shares_add_up_to_the_whole() -> None:
    split = ABSplit("3", 25.0)
    shares = {v: traffic_percent(v, "2", split) for v in ("1", "2", "3")}
    assert shares == {"1": 0.0, "2": 75.0, "3": 25.0}
    # no split, or a split whose candidate is the active version: the active serves everything
    assert traffic_percent("2", "2", None) == 100.0
    assert traffic_percent("2", "2", ABSplit("2", 40.0)) == 100.0
    assert traffic_percent("3", "2", None) == 0.0
    assert traffic_percent("3", None, None) == 0.0


def test_assignment_is_roughly_proportional() -> None:
    for percent in (10.0, 50.0, 90.0):
        split = ABSplit("2", percent)
        n = 20_000
        share = sum(choose_version("1", split, f"s{i}") == "2" for i in range(n)) / n
        assert abs(share - percent / 100) < 0.02, (percent, share)


def test_edges_go_to_the_active_version() -> None:
    assert choose_version("1", ABSplit("2", 100.0), None) == "1"  # no session id
    assert choose_version("1", ABSplit("2", 100.0), "") == "1"
    assert choose_version("1", None, "s") == "1"
    assert choose_version("1", ABSplit("2", 0.0), "s") == "1"
    assert all(choose_version("1", ABSplit("2", 100.0), f"s{i}") == "2" for i in range(100))
    assert choose_version("2", ABSplit("2", 50.0), "s") == "2"  # the candidate got promoted
    assert choose_version(None, ABSplit("2", 50.0), "s") is None


class FakeSplits:
    def __init__(self) -> None:
        self.split: ABSplit | None = None
        self.expected: Expected | None = None

    async def get_split(self) -> ABSplit | None:
        return self.split

    async def set_split(self, candidate_version: str, percent: float, expected: Expected | None = None
                        ) -> ABSplit:
        self.expected = expected
        self.split = ABSplit(candidate_version, percent, datetime.now(UTC))
        return self.split

    async def clear_split(self) -> bool:
        had, self.split = self.split is not None, None
        return had


class FakeVersions:
    async def list_versions(self) -> list[dict[str, Any]]:
        return [{"version": "1", "status": "active"}, {"version": "2", "status": "retired"},
                {"version": "3", "status": "building"}, {"version": "4", "status": "retired"},
                {"version": "5", "status": "failed", "reason": "reindex failed at backfilling: boom"}]

    async def active_version(self) -> str | None:
        return "1"

    async def writable_versions(self) -> list[str]:
        return ["1", "2", "3"]  # 2 is the rollback target; 4 was retired before it


async def test_only_a_complete_index_can_take_traffic() -> None:
    splits = FakeSplits()
    assert (await configure_split(splits, FakeVersions(), "2", 25.0)).percent == 25.0
    with pytest.raises(InvalidSplit, match="being indexed"):
        await configure_split(splits, FakeVersions(), "3", 25.0)
    with pytest.raises(InvalidSplit, match="no index"):
        await configure_split(splits, FakeVersions(), "9", 25.0)
    with pytest.raises(InvalidSplit, match="percent"):
        await configure_split(splits, FakeVersions(), "2", 101.0)
    assert splits.split is not None and splits.split.candidate_version == "2"


async def test_a_candidate_that_no_longer_receives_content_cannot_take_traffic() -> None:
    splits = FakeSplits()
    with pytest.raises(InvalidSplit, match="no longer receives new content"):
        await configure_split(splits, FakeVersions(), "4", 25.0)
    with pytest.raises(InvalidSplit, match="failed to index: reindex failed at backfilling"):
        await configure_split(splits, FakeVersions(), "5", 25.0)
    assert splits.split is None
    # the split is stored as a compare-and-set on the state it was validated against
    await configure_split(splits, FakeVersions(), "2", 25.0)
    assert splits.expected == Expected("1", "retired")


def search(version: str, shown: list[str], clicked: list[str]) -> dict[str, Any]:
    return {"model_version": version, "query": "q",
            "results": [{"id": i, "rank": r} for r, i in enumerate(shown, 1)],
            "clicks": [{"content_id": c, "rank": shown.index(c) + 1 if c in shown else 7} for c in clicked]}


SESSIONS = [
    {"_id": "t/1", "searches": [search("1", ["a", "b", "c"], ["b"]), search("1", ["a", "b"], [])]},
    {"_id": "t/2", "searches": [search("2", ["a", "b", "c"], ["c", "a"]), search("1", ["x"], ["x"])]},
    {"_id": "t/3", "searches": [search("2", ["a"], ["zz"])]},  # a click on an item not shown: its rank
]


def test_ctr_and_mrr_of_the_first_click_per_version() -> None:
    metrics = online_metrics(SESSIONS)
    one, two = metrics["1"], metrics["2"]
    assert one["searches"] == 3 and one["clicked_searches"] == 2 and one["sessions"] == 2
    assert one["ctr"] == pytest.approx(2 / 3)
    assert one["mrr"] == pytest.approx((1 / 2 + 0 + 1) / 3)
    assert two["ctr"] == 1.0 and two["mrr"] == pytest.approx((1 + 1 / 7) / 2)


async def test_streamed_metrics_match_and_stop_at_the_bound() -> None:
    class Source:
        async def iter_sessions(self, since: Any = None, until: Any = None, batch_size: int = 256) -> Any:
            for doc in SESSIONS:
                yield doc

    streamed, read = await collect_online_metrics(Source(), None, 100)
    assert read == 3 and streamed == online_metrics(SESSIONS)
    bounded, read = await collect_online_metrics(Source(), None, 1)
    assert read == 1 and bounded == online_metrics(SESSIONS[:1])
