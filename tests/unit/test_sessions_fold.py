"""Folding clicks events into session documents, and the training policy (in-memory fakes)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

from consumers.sessions.handlers import fold_batch, maybe_request_training, policy_run_id
from core.sessions import SessionEventModel, fold
from schemas.clicks import ClickEvent, ConversionEvent, SearchEvent, ShownResult
from schemas.training import TrainingRequested
from tests.unit.training_fakes import FakeSessionRepo

T0 = datetime(2025, 1, 1, tzinfo=UTC)
NOW = datetime(2025, 1, 2, tzinfo=UTC)


def search(session: str, query: str, ids: list[str], minute: int = 0, tenant: str = "default") -> SearchEvent:
    return SearchEvent(
        session_id=session, query=query, model_version="1", tenant=tenant,
        occurred_at=T0 + timedelta(minutes=minute),
        results=[ShownResult(id=i, rank=r, score=1.0 - r / 10) for r, i in enumerate(ids, start=1)],
    )


def click(session: str, item: str, rank: int, minute: int = 1, **kw: object) -> ClickEvent:
    return ClickEvent(session_id=session, content_id=item, rank=rank,
                      occurred_at=T0 + timedelta(minutes=minute), **kw)  # type: ignore[arg-type]


def test_a_session_folds_searches_clicks_and_conversions() -> None:
    s1 = search("s", "cats", ["a", "b", "c"])
    s2 = search("s", "dogs", ["d", "e"], minute=5)
    events: list[SessionEventModel] = [
        s1, click("s", "b", 2, minute=2), s2, click("s", "e", 2, minute=6),
        click("s", "c", 3, minute=7),  # shown by the first search only
        click("s", "a", 1, minute=8, search_event_id=s1.event_id),
        ConversionEvent(session_id="s", content_id="e", value=3.0, occurred_at=T0 + timedelta(minutes=9)),
    ]
    doc, applied = fold(None, events, NOW)
    assert applied == len(events)
    assert doc["_id"] == "default/s" and doc["created_at"] == NOW
    assert [s["query"] for s in doc["searches"]] == ["cats", "dogs"]
    first, second = doc["searches"]
    assert [c["content_id"] for c in first["clicks"]] == ["b", "c", "a"]
    assert [c["content_id"] for c in second["clicks"]] == ["e"]
    assert second["conversions"][0]["value"] == 3.0
    assert first["results"][1] == {"id": "b", "rank": 2, "score": 0.8}
    assert doc["first_event_at"] == T0 and doc["last_event_at"] == T0 + timedelta(minutes=9)
    assert doc["model_versions"] == ["1"]


def test_a_click_not_shown_by_any_search_attaches_to_the_latest() -> None:
    events: list[SessionEventModel] = [
        search("s", "q1", ["a"]), search("s", "q2", ["b"], 2), click("s", "zz", 4, 3)]
    doc, _ = fold(None, events, NOW)
    assert [c["content_id"] for c in doc["searches"][1]["clicks"]] == ["zz"]


def test_a_click_before_its_search_waits_then_joins_it() -> None:
    s = search("s", "q", ["a", "b"], minute=5)
    doc, _ = fold(None, [click("s", "b", 2, minute=1, search_event_id=s.event_id)], NOW)
    assert doc["unattached"] and not doc["searches"]
    doc, _ = fold(doc, [s], NOW)
    assert doc["unattached"] == [] and doc["searches"][0]["clicks"][0]["content_id"] == "b"


def test_folding_the_same_events_again_changes_nothing() -> None:
    events: list[SessionEventModel] = [search("s", "q", ["a", "b"]), click("s", "b", 2)]
    doc, _ = fold(None, events, NOW)
    again, applied = fold(doc, events, NOW + timedelta(hours=1))
    assert applied == 0 and again == doc


async def test_fold_batch_is_idempotent_and_counts_new_sessions() -> None:
    repo = FakeSessionRepo()
    events: list[SessionEventModel] = [
        search("s1", "q", ["a", "b"]), click("s1", "b", 2), search("s2", "r", ["c"])]
    report = await fold_batch(events, repo, NOW)
    assert (report.applied, report.sessions_created, report.duplicates) == (3, 2, 0)
    snapshot = {k: dict(v) for k, v in repo.docs.items()}
    report = await fold_batch(events, repo, NOW)
    assert (report.applied, report.sessions_created, report.duplicates) == (0, 0, 3)
    assert repo.docs == snapshot
    report = await fold_batch([click("s1", "a", 1, minute=3)], repo, NOW)
    assert (report.applied, report.sessions_updated) == (1, 1)
    assert repo.docs["default/s1"]["revision"] == 2


async def test_fold_batch_retries_after_a_concurrent_write() -> None:
    repo = FakeSessionRepo()
    repo.conflicts_to_inject = 2
    report = await fold_batch([search("s1", "q", ["a"])], repo, NOW)
    assert report.sessions_created == 1 and len(repo.docs) == 1


async def test_tenants_keep_separate_sessions() -> None:
    repo = FakeSessionRepo()
    await fold_batch([search("s", "q", ["a"], tenant="t1"), search("s", "q", ["a"], tenant="t2")], repo, NOW)
    assert sorted(repo.docs) == ["t1/s", "t2/s"]


async def test_policy_requests_training_after_n_new_sessions_once() -> None:
    repo = FakeSessionRepo()
    sent: list[TrainingRequested] = []

    async def publish(event: TrainingRequested) -> None:
        sent.append(event)

    assert await maybe_request_training(repo, 0, 10, publish, NOW) is None  # off
    await fold_batch([search(f"s{i}", "q", ["a"]) for i in range(2)], repo, NOW)
    assert await maybe_request_training(repo, 3, 10, publish, NOW) is None
    await fold_batch([search("s9", "q", ["a"])], repo, NOW)
    run_id = await maybe_request_training(repo, 3, 10, publish, NOW)
    assert run_id == policy_run_id(None) and [e.run_id for e in sent] == [run_id]
    assert sent[0].min_sessions == 10
    # No new sessions since: nothing more.
    assert await maybe_request_training(repo, 3, 10, publish, NOW + timedelta(seconds=1)) is None
    later = NOW + timedelta(minutes=1)
    await fold_batch([search(f"n{i}", "q", ["a"]) for i in range(3)], repo, later)
    second = await maybe_request_training(repo, 3, 10, publish, later)
    assert second == policy_run_id(run_id) and second != run_id


def test_policy_run_ids_are_deterministic() -> None:
    assert policy_run_id(None) == policy_run_id(None)
    assert policy_run_id("a") != policy_run_id("b")
    assert str(uuid4()) != policy_run_id(None)


def test_no_click_stream_pushes_a_session_past_its_byte_bound() -> None:
    import bson

    from core.sessions import MAX_SESSION_BYTES

    # The largest search events the schema allows: 200 results with 512-character ids.
    def huge(minute: int) -> SearchEvent:
        return search("s", "q" * 4096, [f"{minute:04d}-" + "x" * 504 + f"{r:03d}" for r in range(200)],
                      minute=minute)

    # Unbounded, 150 of them would make a document of about 17 MiB.
    doc, applied = fold(None, [huge(m) for m in range(100)], NOW)
    assert len(bson.encode(doc)) < MAX_SESSION_BYTES < 16 * 1024 * 1024
    assert 0 < applied < 100 and doc["dropped_events"] == 100 - applied
    doc, more = fold(doc, [huge(m) for m in range(100, 150)] + [click("s", "a", 1, minute=999)], NOW)
    # The big ones are dropped and counted; a click still fits in the room left.
    assert more == 1 and doc["dropped_events"] == 150 - applied
    assert len(bson.encode(doc)) <= doc["size_bytes"] <= MAX_SESSION_BYTES


def test_a_session_counts_the_events_it_drops_past_its_event_bound() -> None:
    from core.sessions import MAX_EVENTS_PER_SESSION

    events = [click("s", f"c{n}", 1, minute=n) for n in range(MAX_EVENTS_PER_SESSION + 5)]
    doc, applied = fold(None, events, NOW)
    assert applied == MAX_EVENTS_PER_SESSION and doc["dropped_events"] == 5


def test_a_session_stored_before_sizes_were_kept_gets_its_size() -> None:
    import bson

    doc, _ = fold(None, [search("s", "cats", ["a"])], NOW)
    del doc["size_bytes"]
    doc, _ = fold(doc, [click("s", "a", 1)], NOW)
    assert doc["size_bytes"] >= len(bson.encode(doc)) - 64


async def test_fold_batch_counts_searches_and_clicks_per_serving_version_once() -> None:
    repo = FakeSessionRepo()
    on_two = search("s1", "r", ["c"], minute=2).model_copy(update={"model_version": "2"})
    early = click("s1", "c", 1, minute=3, search_event_id=on_two.event_id)
    events: list[SessionEventModel] = [search("s1", "q", ["a", "b"]), click("s1", "b", 2), early]
    report = await fold_batch(events, repo, NOW)
    assert (report.searches, report.clicks) == ({"1": 1}, {"1": 1})
    report = await fold_batch([*events, on_two], repo, NOW)  # the early click joins its search
    assert (report.searches, report.clicks) == ({"2": 1}, {"2": 1})
    report = await fold_batch([*events, on_two], repo, NOW)
    assert not report.searches and not report.clicks


async def test_each_tenant_has_its_own_policy_run_for_its_own_lineage() -> None:
    sent: list[TrainingRequested] = []

    async def publish(event: TrainingRequested) -> None:
        sent.append(event)

    first = await maybe_request_training(FakeSessionRepo(), 1, 10, publish, NOW, "tenant-a")
    assert first is None  # no sessions yet
    repo_a, repo_b = FakeSessionRepo(), FakeSessionRepo()
    await fold_batch([search("s1", "q", ["a"])], repo_a, NOW)
    await fold_batch([search("s1", "q", ["a"])], repo_b, NOW)
    run_a = await maybe_request_training(repo_a, 1, 10, publish, NOW, "tenant-a")
    run_b = await maybe_request_training(repo_b, 1, 10, publish, NOW, "tenant-b")
    assert run_a == policy_run_id(None, "tenant-a") != run_b == policy_run_id(None, "tenant-b")
    assert policy_run_id(None, "tenant-a") != policy_run_id(None)  # nor the default tenant's
    assert [(e.run_id, e.tenant) for e in sent] == [(run_a, "tenant-a"), (run_b, "tenant-b")]
