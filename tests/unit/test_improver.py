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
    improve_tenants,
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
    """Every tenant on `version` (unless `versions` names its own); state per (version, tenant)."""

    def __init__(self, version: str, chunks: dict[Key, list[np.ndarray]],
                 versions: dict[str, str] | None = None) -> None:
        self.version = version
        self.versions = versions or {}
        self.chunks = {key: [v.copy() for v in vs] for key, vs in chunks.items()}
        self.originals: dict[tuple[str, str, int], np.ndarray] = {}
        self.states: dict[tuple[str, str], ImproverState] = {}
        self.commits: list[tuple[str, str, list[Key]]] = []  # (version, tenant, items adjusted)
        self.fail_for: set[str] = set()

    @property
    def state(self) -> ImproverState:
        return self.states.get((self.version, "default"), ImproverState())

    async def active_version(self, tenant: str) -> str | None:
        if tenant in self.fail_for:
            raise RuntimeError(f"{tenant}: the store is down")
        return self.versions.get(tenant, self.version)

    async def improver_state(self, version: str, tenant: str) -> ImproverState:
        return self.states.get((version, tenant), ImproverState())

    async def chunk_vectors(self, version: str, keys: Sequence[Key]) -> dict[Key, list[ChunkState]]:
        return {key: [ChunkState(i, 1, v.copy(), self.originals.get((*key, i), v).copy())
                      for i, v in enumerate(self.chunks[key])] for key in keys if key in self.chunks}

    async def commit_run(self, version: str, tenant: str, expected_revision: int,
                         updates: Sequence[ChunkUpdate], watermark: datetime,
                         metrics: dict[str, float]) -> bool:
        assert all(u.tenant == tenant for u in updates), "a run adjusted another tenant's items"
        if expected_revision != (await self.improver_state(version, tenant)).revision:
            return False
        for u in updates:
            self.originals.setdefault((u.tenant, u.item_id, u.chunk_no), u.original.copy())
            self.chunks[(u.tenant, u.item_id)][u.chunk_no] = u.vector.copy()
        self.states[(version, tenant)] = ImproverState(
            expected_revision + (1 if updates else 0), watermark, metrics)
        self.commits.append((version, tenant, sorted({(u.tenant, u.item_id) for u in updates})))
        return True

    async def revert(self, version: str, tenant: str | None = None) -> int:
        mine = {k: v for k, v in self.originals.items() if tenant is None or k[0] == tenant}
        for (owner, item, no), original in mine.items():
            self.chunks[(owner, item)][no] = original.copy()
            del self.originals[(owner, item, no)]
        for (v, t), state in list(self.states.items()):
            if v == version and (tenant is None or t == tenant):
                self.states[(v, t)] = ImproverState(state.revision + 1, state.watermark, {})
        return len(mine)


class FakeSessions:
    def __init__(self, docs: list[SessionDoc], tenant: str | None = None) -> None:
        self.docs = docs
        self.tenant = tenant

    async def iter_sessions(self, since: datetime | None = None, until: datetime | None = None,
                            batch_size: int = 256) -> AsyncIterator[SessionDoc]:
        for doc in sorted(self.docs, key=lambda d: d["_id"]):
            if (since is None or doc["last_event_at"] >= since) and self.tenant in (None, doc["tenant"]):
                yield doc

    async def tenants_since(self, since: datetime) -> list[str]:
        return sorted({doc["tenant"] for doc in self.docs if doc["last_event_at"] >= since})

    def for_tenant(self, tenant: str) -> FakeSessions:
        return FakeSessions(self.docs, tenant)


def session_id(held_out: bool, n: int = 0, tenant: str = "default") -> str:
    found = 0
    for i in range(10_000):
        if is_eval_session(f"{tenant}/s{i}", 0.2) == held_out:
            if found == n:
                return f"s{i}"
            found += 1
    raise AssertionError


def session(
    sid: str, query: str, shown: list[str], clicked: str, at: datetime, version: str = "1",
    tenant: str = "default",
) -> SessionDoc:
    return {
        "_id": f"{tenant}/{sid}", "tenant": tenant, "session_id": sid, "last_event_at": at,
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
    store = FakeAdjustments("1", {}, versions={"default": None})  # type: ignore[dict-item]
    report = await improve(store, FakeSessions([]), FakeEmbedder({}), ImproverConfig(), now=NOW)
    assert report.version is None and not report.committed


# --- per tenant ----------------------------------------------------------------------------------
def two_tenants() -> tuple[FakeAdjustments, FakeEmbedder]:
    """Tenants "a" (on version 1) and "b" (on its own version 2), each with items x, y, z."""
    chunks = {(t, i): [unit(v)] for t in ("a", "b") for i, v in (
        ("x", [0.9, 0.4, 0, 0, 0, 0, 0, 0]), ("y", [0.85, 0, 0.5, 0, 0, 0, 0, 0]),
        ("z", [0.7, 0, 0, 0.7, 0, 0, 0, 0]))}
    return (FakeAdjustments("1", chunks, versions={"b": "2"}),
            FakeEmbedder({"q": unit([1, 0, 0, 0, 0, 0, 0, 0])}))


def clicks_of(tenant: str, version: str, n: int, at: datetime) -> list[SessionDoc]:
    return [session(session_id(False, k, tenant), "q", ["x", "y", "z"], "z", at, version, tenant)
            for k in range(n)]


async def test_each_tenant_is_improved_on_its_own_version_from_its_own_sessions() -> None:
    store, embedder = two_tenants()
    before = {k: [v.copy() for v in vs] for k, vs in store.chunks.items()}
    at = NOW - timedelta(minutes=5)
    sessions = FakeSessions(clicks_of("a", "1", 3, at) + clicks_of("b", "2", 2, at))
    reports = await improve_tenants(store, sessions, embedder, ImproverConfig(settle_s=0), now=NOW)
    assert [(r.tenant, r.version, r.clicks, r.revision) for r in reports] == [
        ("a", "1", 3, 1), ("b", "2", 2, 1)]
    # Each run wrote only its own tenant's items, into its own active version.
    assert [(v, t, {owner for owner, _ in items}) for v, t, items in store.commits] == [
        ("1", "a", {"a"}), ("2", "b", {"b"})]
    assert set(store.states) == {("1", "a"), ("2", "b")}
    assert store.states[("1", "a")].watermark == store.states[("2", "b")].watermark == NOW
    assert all(not np.array_equal(store.chunks[(t, "z")][0], before[(t, "z")][0]) for t in ("a", "b"))


async def test_a_tenants_clicks_never_move_another_tenants_items() -> None:
    store, embedder = two_tenants()
    before = {k: [v.copy() for v in vs] for k, vs in store.chunks.items()}
    # Tenant a's clicks name items also called x, y, z, and version 2 (tenant b's) is also served to it.
    sessions = FakeSessions(clicks_of("a", "2", 5, NOW - timedelta(minutes=5)))
    report = await improve(store, sessions, embedder, ImproverConfig(settle_s=0), now=NOW, tenant="b")
    assert report.tenant == "b" and report.clicks == 0 and report.items == 0
    reports = await improve_tenants(store, sessions, embedder, ImproverConfig(settle_s=0), now=NOW)
    assert [(r.tenant, r.version, r.clicks) for r in reports] == [("a", "1", 0)]  # a serves 1, not 2
    assert all(np.array_equal(store.chunks[k][0], before[k][0]) for k in before)


async def test_state_is_per_tenant_and_a_tenants_revert_restores_only_its_items() -> None:
    store, embedder = two_tenants()
    store.versions = {}  # both tenants on version 1: one version, two tenants' states
    before = {k: [v.copy() for v in vs] for k, vs in store.chunks.items()}
    at = NOW - timedelta(minutes=5)
    sessions = FakeSessions(clicks_of("a", "1", 2, at) + clicks_of("b", "1", 2, at))
    await improve_tenants(store, sessions, embedder, ImproverConfig(settle_s=0), now=NOW)
    assert store.states[("1", "a")].revision == store.states[("1", "b")].revision == 1
    # Later clicks of b only: a's state does not move.
    later = NOW + timedelta(minutes=10)
    sessions.docs += [session(session_id(False, 9, "b"), "q", ["x", "y", "z"], "z",
                              later - timedelta(minutes=1), "1", "b")]
    reports = await improve_tenants(store, sessions, embedder, ImproverConfig(settle_s=0), now=later)
    assert {(r.tenant, r.clicks, r.revision) for r in reports} == {("a", 0, 1), ("b", 1, 2)}
    assert await store.revert("1", tenant="a") == 3
    assert all(np.array_equal(store.chunks[("a", i)][0], before[("a", i)][0]) for i in "xyz")
    assert not np.array_equal(store.chunks[("b", "z")][0], before[("b", "z")][0])
    assert store.states[("1", "a")].revision == 2 and store.states[("1", "b")].revision == 2


async def test_one_tenants_failed_run_does_not_stop_the_others() -> None:
    store, embedder = two_tenants()
    store.fail_for = {"a"}
    at = NOW - timedelta(minutes=5)
    sessions = FakeSessions(clicks_of("a", "1", 2, at) + clicks_of("b", "2", 2, at))
    reports = await improve_tenants(store, sessions, embedder, ImproverConfig(settle_s=0), now=NOW)
    assert [(r.tenant, r.clicks, r.committed) for r in reports] == [("b", 2, True)]


async def test_tenants_without_sessions_in_the_window_are_not_run() -> None:
    store, embedder = two_tenants()
    old = NOW - ImproverConfig().eval_window - timedelta(days=1)
    sessions = FakeSessions(clicks_of("a", "1", 1, old) + clicks_of("b", "2", 1, NOW - timedelta(minutes=5)))
    reports = await improve_tenants(store, sessions, embedder, ImproverConfig(settle_s=0), now=NOW)
    assert [r.tenant for r in reports] == ["b"]
