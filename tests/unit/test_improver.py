"""The improver's math and run over in-memory fakes: bounded, reversible, versioned, measured."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from core.domain import Embeddings
from core.improver import (
    ChunkState,
    ChunkUpdate,
    ImproverConfig,
    ImproverState,
    Key,
    adjust_vector,
    cap_drift,
    improve,
)
from core.sessions import SessionDoc
from core.training.dataset import is_eval_session

DIM = 8
NOW = datetime(2025, 1, 1, 12, tzinfo=UTC)


def unit(values: Sequence[float]) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def random_unit(rng: np.random.Generator) -> np.ndarray:
    return unit(rng.normal(size=DIM).tolist())


def test_a_step_moves_toward_the_clicked_query_by_at_most_alpha() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        current, query, skipped = random_unit(rng), random_unit(rng), random_unit(rng)
        moved = adjust_vector(current, current, [query], [skipped], alpha=0.1, min_cosine=0.0)
        assert abs(float(np.linalg.norm(moved)) - 1.0) < 1e-5
        assert float(np.linalg.norm(moved - current)) <= 0.1 + 1e-6
        assert float(moved @ query) >= float(current @ query) - 1e-6 or float(current @ query) > 0.99


def test_the_drift_from_the_original_is_capped_however_many_steps() -> None:
    rng = np.random.default_rng(1)
    original, query = random_unit(rng), random_unit(rng)
    vector = original
    for _ in range(100):
        vector = adjust_vector(vector, original, [query], [], alpha=0.1, min_cosine=0.9)
        assert float(vector @ original) >= 0.9 - 1e-5
    assert float(vector @ query) > float(original @ query)
    assert abs(float(vector @ original) - 0.9) < 1e-3  # it went as far as allowed, no further


def test_cap_drift_keeps_vectors_within_the_cap_and_projects_the_others_onto_it() -> None:
    original = unit([1, 0, 0, 0, 0, 0, 0, 0])
    near = unit([1, 0.1, 0, 0, 0, 0, 0, 0])
    assert np.allclose(cap_drift(near, original, 0.9), near, atol=1e-6)
    far = unit([0, 1, 0, 0, 0, 0, 0, 0])
    capped = cap_drift(far, original, 0.9)
    assert abs(float(capped @ original) - 0.9) < 1e-9 and capped[1] > 0
    assert np.allclose(cap_drift(-original, original, 0.9) @ original, 0.9)


def test_no_feedback_direction_leaves_the_vector_unchanged() -> None:
    v = unit([1, 2, 3, 4, 5, 6, 7, 8])
    assert np.allclose(adjust_vector(v, v, [v], [], 0.1, 0.9), v, atol=1e-6)
    assert np.allclose(adjust_vector(v, v, [], [], 0.1, 0.9), v, atol=1e-6)


# --- the run over fakes ------------------------------------------------------------------------
class FakeEmbedder:
    max_batch_size = 4

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors
        self.calls: list[tuple[list[str], str]] = []

    async def embed(self, texts: Sequence[str], model_version: str, *, lane: str = "bulk") -> Embeddings:
        self.calls.append((list(texts), model_version))
        return Embeddings(np.stack([self.vectors[t] for t in texts]), "fake", model_version)


class FakeAdjustments:
    def __init__(self, version: str, chunks: dict[Key, list[np.ndarray]]) -> None:
        self.version = version
        self.chunks = {key: [v.copy() for v in vs] for key, vs in chunks.items()}
        self.originals: dict[tuple[str, str, int], np.ndarray] = {}
        self.state = ImproverState()

    async def active_version(self) -> str | None:
        return self.version

    async def improver_state(self, version: str) -> ImproverState:
        return self.state

    async def chunk_vectors(self, version: str, keys: Sequence[Key]) -> dict[Key, list[ChunkState]]:
        return {key: [ChunkState(i, 1, v.copy(), self.originals.get((*key, i), v).copy())
                      for i, v in enumerate(self.chunks[key])] for key in keys if key in self.chunks}

    async def commit_run(self, version: str, expected_revision: int, updates: Sequence[ChunkUpdate],
                         watermark: datetime, metrics: dict[str, float]) -> bool:
        if expected_revision != self.state.revision:
            return False
        for u in updates:
            self.originals.setdefault((u.tenant, u.item_id, u.chunk_no), u.original.copy())
            self.chunks[(u.tenant, u.item_id)][u.chunk_no] = u.vector.copy()
        self.state = ImproverState(expected_revision + (1 if updates else 0), watermark, metrics)
        return True

    async def revert(self, version: str, tenant: str | None = None) -> int:
        for (tenant, item, no), original in self.originals.items():
            self.chunks[(tenant, item)][no] = original.copy()
        restored = len(self.originals)
        self.originals.clear()
        self.state = ImproverState(self.state.revision + 1, self.state.watermark, {})
        return restored


class FakeSessions:
    def __init__(self, docs: list[SessionDoc]) -> None:
        self.docs = docs

    async def iter_sessions(self, since: datetime | None = None, until: datetime | None = None,
                            batch_size: int = 256) -> AsyncIterator[SessionDoc]:
        for doc in sorted(self.docs, key=lambda d: d["_id"]):
            if since is None or doc["last_event_at"] >= since:
                yield doc


def session_id(held_out: bool, n: int = 0) -> str:
    found = 0
    for i in range(10_000):
        if is_eval_session(f"default/s{i}", 0.2) == held_out:
            if found == n:
                return f"s{i}"
            found += 1
    raise AssertionError


def session(
    sid: str, query: str, shown: list[str], clicked: str, at: datetime, version: str = "1"
) -> SessionDoc:
    return {
        "_id": f"default/{sid}", "tenant": "default", "session_id": sid, "last_event_at": at,
        "searches": [{"event_id": f"e-{sid}", "query": query, "model_version": version, "at": at,
                      "results": [{"id": i, "rank": r, "score": 0.0} for r, i in enumerate(shown, 1)],
                      "clicks": [{"event_id": f"c-{sid}", "content_id": clicked,
                                  "rank": shown.index(clicked) + 1, "at": at}],
                      "conversions": []}],
    }


@pytest.fixture
def world() -> tuple[FakeAdjustments, FakeEmbedder]:
    # Query "q" is closest to "a" and "b"; "c" is the item users click.
    q = unit([1, 0, 0, 0, 0, 0, 0, 0])
    chunks = {
        ("default", "a"): [unit([0.9, 0.4, 0, 0, 0, 0, 0, 0])],
        ("default", "b"): [unit([0.85, 0, 0.5, 0, 0, 0, 0, 0])],
        ("default", "c"): [unit([0.7, 0, 0, 0.7, 0, 0, 0, 0]), unit([0.6, 0, 0, 0, 0.8, 0, 0, 0])],
    }
    return FakeAdjustments("1", chunks), FakeEmbedder({"q": q})


async def test_clicks_move_the_clicked_item_up_and_revert_restores_the_originals(
    world: tuple[FakeAdjustments, FakeEmbedder],
) -> None:
    store, embedder = world
    before = {k: [v.copy() for v in vs] for k, vs in store.chunks.items()}
    q = embedder.vectors["q"]
    config = ImproverConfig(alpha=0.1, min_cosine=0.9, settle_s=0)
    clicks = [session(session_id(False, n), "q", ["a", "b", "c"], "c", NOW - timedelta(minutes=5))
              for n in range(3)]
    held = [session(session_id(True), "q", ["a", "b", "c"], "c", NOW - timedelta(minutes=5))]
    sessions = FakeSessions(clicks + held)

    def score(item: str) -> float:
        return max(float(v @ q) for v in store.chunks[("default", item)])

    gap = score("a") - score("c")
    report = await improve(store, sessions, embedder, config, now=NOW)
    assert report.committed and report.revision == 1 and report.clicks == 3 and report.items == 3
    assert score("a") - score("c") < gap  # c rose, a and b (skipped above it) fell
    assert score("c") > max(float(v @ q) for v in before[("default", "c")])
    assert score("a") < float(before[("default", "a")][0] @ q)
    for key, vectors in store.chunks.items():
        for vector, original in zip(vectors, before[key], strict=True):
            assert float(vector @ original) >= 0.9 - 1e-5
    # Measured on the held-out session (never used to adjust): before and after.
    assert report.metrics["original_queries"] == 1.0 and report.metrics["adjusted_queries"] == 1.0
    assert "original_ndcg_at_10" in report.metrics and "adjusted_mrr_at_10" in report.metrics

    # The same clicks are not applied twice: the watermark moved past them.
    again = await improve(store, sessions, embedder, config, now=NOW + timedelta(minutes=1))
    assert again.clicks == 0 and again.revision == 1

    # Many runs of fresh clicks stay within the drift cap; revert gives back the exact originals.
    for step in range(2, 40):
        at = NOW + timedelta(minutes=step)
        sessions.docs.append(session(f"more{step}", "q", ["a", "b", "c"], "c", at))
        await improve(store, sessions, embedder, config, now=at + timedelta(seconds=1))
    for key, vectors in store.chunks.items():
        for vector, original in zip(vectors, before[key], strict=True):
            assert float(vector @ original) >= 0.9 - 1e-5
    assert score("c") > score("a")  # the clicked item now ranks first for its query
    restored = await store.revert("1")
    assert restored == 4
    for key, vectors in store.chunks.items():
        for vector, original in zip(vectors, before[key], strict=True):
            assert np.array_equal(vector, original)


async def test_clicks_on_another_version_or_too_recent_are_ignored(
    world: tuple[FakeAdjustments, FakeEmbedder],
) -> None:
    store, embedder = world
    sessions = FakeSessions([
        session(session_id(False, 0), "q", ["a", "b", "c"], "c", NOW - timedelta(minutes=5), version="2"),
        session(session_id(False, 1), "q", ["a", "b", "c"], "c", NOW - timedelta(seconds=1)),
    ])
    report = await improve(store, sessions, embedder, ImproverConfig(settle_s=5), now=NOW)
    assert report.clicks == 0 and report.items == 0 and report.revision == 0
    # The too-recent click is applied by the next run.
    later = await improve(
        store, sessions, embedder, ImproverConfig(settle_s=5), now=NOW + timedelta(minutes=1)
    )
    assert later.clicks == 1 and later.revision == 1


async def test_nothing_happens_without_an_active_version() -> None:
    store = FakeAdjustments("1", {})
    store.version = None  # type: ignore[assignment]
    report = await improve(store, FakeSessions([]), FakeEmbedder({}), ImproverConfig(), now=NOW)
    assert report.version is None and not report.committed
