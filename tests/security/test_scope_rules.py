"""Scopes, topics open to clients, and the gateway's bounds, over fakes (no component runs)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.api_keys import hash_key
from core.config import Settings
from gateway import deps
from gateway.main import create_app
from gateway.routes.admin import redact
from gateway.security import RateLimiter
from producers.publisher import Delivery, PublisherError

KEYS = {
    "publish-a": ("tenant-a", ["publish"]),
    "search-a": ("tenant-a", ["search"]),
    "admin-a": ("tenant-a", ["admin"]),
    "operator": ("platform", ["operator"]),
}


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer secret-{name}"}


class FakePublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []
        self.down = False

    async def publish(self, topic: Any, event: Any) -> Delivery:
        return (await self.publish_many(topic, [event]))[0]

    async def publish_many(self, topic: Any, events: Any) -> list[Delivery]:
        if self.down:
            raise PublisherError("clicks key 's' was not delivered: KafkaConnectionError()")
        self.sent += [(str(topic), e) for e in events]
        return [Delivery(str(topic), 0, n, "k", None) for n, _ in enumerate(events)]


class FakeTasks:
    """TaskStore's create, get, update and take_turn, in memory."""

    def __init__(self) -> None:
        self.tasks: dict[str, dict[str, Any]] = {}
        self.turns: dict[str, str] = {}

    async def create(self, task_id: str, type: str, tenant: str, details: Any = None
                     ) -> tuple[dict[str, Any], bool]:
        if task_id in self.tasks:
            return self.tasks[task_id], False
        self.tasks[task_id] = {"id": task_id, "type": type, "tenant": tenant, "details": details,
                               "status": "pending"}
        return self.tasks[task_id], True

    async def get(self, task_id: str, tenant: str | None = None) -> dict[str, Any] | None:
        return self.tasks.get(task_id)

    async def update(self, task_id: str, **fields: Any) -> dict[str, Any] | None:
        self.tasks[task_id].update(fields)
        return self.tasks[task_id]

    async def take_turn(self, type: str, tenant: str, task_id: str) -> dict[str, Any] | None:
        holder = self.tasks.get(self.turns.get(f"{type}/{tenant}", ""))
        if holder is not None and holder["id"] != task_id and holder["status"] in ("pending", "running"):
            return holder
        self.turns[f"{type}/{tenant}"] = task_id
        return None


@pytest.fixture
def rig() -> Iterator[tuple[TestClient, FakePublisher, FakeTasks]]:
    records = [{"key_id": name, "key_sha256": hash_key(f"secret-{name}"), "tenant": tenant, "scopes": scopes}
               for name, (tenant, scopes) in KEYS.items()]
    app = create_app(Settings(api_keys_json=json.dumps(records), gateway_max_body_bytes=10_000,
                              gateway_max_batch=5))
    publisher, tasks = FakePublisher(), FakeTasks()

    async def fake_publisher() -> FakePublisher:
        return publisher

    async def fake_tasks() -> FakeTasks:
        return tasks

    app.dependency_overrides[deps.publisher] = fake_publisher
    with TestClient(app) as client:
        app.state.resources.tasks = fake_tasks
        app.state.resources.limiter = RateLimiter(100, 100)  # no PostgreSQL here
        yield client, publisher, tasks


CONTENT = {"id": "doc-1", "text": "hello", "version": 1}
CLICK = {"type": "click", "session_id": "s", "content_id": "doc-1", "rank": 1}
TRAINING = {"run_id": "run-1", "min_sessions": 1}


def test_publish_scope_may_send_content_and_clicks_only(rig: Any) -> None:
    client, publisher, _ = rig
    publish = auth("publish-a")
    assert client.post("/v1/events/content-upserted", json=CONTENT, headers=publish).status_code == 202
    assert client.post("/v1/events/clicks", json=CLICK, headers=auth("publish-a")).status_code == 202
    refused = client.post("/v1/events/training-requested", json=TRAINING, headers=auth("publish-a"))
    assert refused.status_code == 403 and "'admin' scope" in refused.json()["detail"]
    assert [topic for topic, _ in publisher.sent] == ["content-upserted", "clicks"]
    assert client.post("/v1/events/clicks", json=CLICK, headers=auth("search-a")).status_code == 403


@pytest.mark.parametrize("key", ["publish-a", "admin-a", "operator"])
def test_platform_topics_are_never_accepted_from_outside(rig: Any, key: str) -> None:
    client, publisher, _ = rig
    published = {"model_version": "7", "registry_version": 7, "run_id": "r",
                 "artifact_uri": "http://evil.example/model.tar", "metrics": {}}
    for topic, body in (("model-published", published),
                        ("reindex-requested", {"model_version": "7", "activate": True})):
        refused = client.post(f"/v1/events/{topic}", json=body, headers=auth(key))
        assert refused.status_code == 403, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert "not accepted from outside" in refused.json()["detail"]
    assert publisher.sent == []


def test_training_requested_needs_admin_and_a_run_id_of_ones_own(rig: Any) -> None:
    client, publisher, tasks = rig
    accepted = client.post("/v1/events/training-requested", json=TRAINING, headers=auth("admin-a"))
    assert accepted.status_code == 202
    assert tasks.tasks["run-1"]["tenant"] == "tenant-a"
    tasks.tasks["run-1"]["status"] = "succeeded"
    tasks.tasks["run-b"] = {"id": "run-b", "type": "training", "tenant": "tenant-b", "status": "pending"}
    taken = client.post("/v1/events/training-requested", json={**TRAINING, "run_id": "run-b"},
                        headers=auth("admin-a"))
    assert taken.status_code == 409 and "run-b" in taken.json()["detail"]
    assert tasks.tasks["run-b"]["tenant"] == "tenant-b"
    assert [e.run_id for _, e in publisher.sent] == ["run-1"]


def test_kafka_down_answers_503_with_retry_after(rig: Any) -> None:
    client, publisher, _ = rig
    publisher.down = True
    for path, body in (("/v1/content", CONTENT), ("/v1/clicks", CLICK), ("/v1/events/clicks", CLICK)):
        response = client.post(path, json=body, headers=auth("publish-a"))
        assert response.status_code == 503, (path, response.text)
        assert int(response.headers["Retry-After"]) >= 1
        assert response.headers["content-type"] == "application/problem+json"


def test_a_chunked_body_over_the_limit_gets_413(rig: Any) -> None:
    client, publisher, _ = rig
    body = json.dumps({**CONTENT, "text": "x" * 20_000}).encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 4096):
            yield body[start:start + 4096]

    response = client.post("/v1/content", content=chunks(),
                           headers={**auth("publish-a"), "content-type": "application/json"})
    assert response.status_code == 413, response.text
    assert "10000 bytes" in response.json()["detail"]
    assert publisher.sent == []


def test_click_batches_are_capped(rig: Any) -> None:
    client, publisher, _ = rig
    too_many = client.post("/v1/clicks", json={"events": [CLICK] * 6}, headers=auth("publish-a"))
    assert too_many.status_code == 413 and "at most 5 events" in too_many.json()["detail"]
    assert publisher.sent == []
    five = client.post("/v1/clicks", json={"events": [CLICK] * 5}, headers=auth("publish-a"))
    assert five.status_code == 202


def test_scopes_do_not_reach_further_than_they_say(rig: Any) -> None:
    client, _, _ = rig
    assert client.post("/v1/training-runs", json={}, headers=auth("publish-a")).status_code == 403
    reindex = client.post("/v1/reindex", json={"model_version": "2"}, headers=auth("search-a"))
    assert reindex.status_code == 403
    assert client.post("/v1/models/2/activate", headers=auth("publish-a")).status_code == 403
    assert client.put("/v1/models/ab-split", json={"candidate_version": "2", "percent": 5},
                      headers=auth("search-a")).status_code == 403
    assert client.get("/v1/admin/dlq", headers=auth("publish-a")).status_code == 403
    assert client.get("/v1/admin/status", headers=auth("admin-a")).status_code == 403


def test_status_never_shows_a_password() -> None:
    shown = redact([{"name": "postgres", "url": "postgresql://flywheel:s3cret@db:5432/flywheel",
                     "detail": "connect to mongodb://root:hunter2@mongo:27017 failed"}])
    assert "s3cret" not in json.dumps(shown) and "hunter2" not in json.dumps(shown)
    assert shown[0]["url"] == "postgresql://flywheel:***@db:5432/flywheel"
    assert redact({"url": "http://127.0.0.1:8000"}) == {"url": "http://127.0.0.1:8000"}


def test_a_letters_tenant_comes_from_its_event_or_its_content_key() -> None:
    from kafka_ops.dead_letter_queue import Letter

    def letter(topic: str, key: str | None, value: bytes | None) -> Letter:
        return Letter(f"{topic}.dlq", 0, 0, 0, key, value, {"dlq-original-topic": topic})

    assert letter("clicks", "s", b'{"tenant": "acme", "type": "click"}').tenant == "acme"
    assert letter("content-upserted", "acme/doc-1", None).tenant == "acme"  # a tombstone
    assert letter("content-upserted", "doc-1", b"not json").tenant == "default"
    assert letter("clicks", "s", b"not json").tenant is None  # the operator's alone
    assert letter("clicks", "s", b'{"tenant": 7}').tenant is None


def test_a_tenant_has_one_training_run_at_a_time(rig: Any) -> None:
    client, publisher, tasks = rig
    first = client.post("/v1/training-runs", json={"min_sessions": 1}, headers=auth("admin-a"))
    assert first.status_code == 202
    run_id = first.json()["task_id"]
    for path, body in (("/v1/training-runs", {"min_sessions": 1}),
                       ("/v1/events/training-requested", {**TRAINING, "run_id": "run-2"})):
        busy = client.post(path, json=body, headers=auth("admin-a"))
        assert busy.status_code == 409 and run_id in busy.json()["detail"], busy.text
    assert "run-2" not in tasks.tasks and len(publisher.sent) == 1
    # Another tenant's run does not wait for it; and once A's run ends, A may start another.
    tasks.tasks["run-b"] = {"id": "run-b", "type": "training", "tenant": "tenant-b", "status": "running"}
    tasks.turns["training/tenant-b"] = "run-b"
    tasks.tasks[run_id]["status"] = "rejected"
    assert client.post("/v1/training-runs", json={}, headers=auth("admin-a")).status_code == 202
    assert tasks.tasks["run-b"]["status"] == "running"


def test_a_training_request_kafka_did_not_take_frees_the_turn(rig: Any) -> None:
    client, publisher, tasks = rig
    publisher.down = True
    lost = client.post("/v1/training-runs", json={}, headers=auth("admin-a"))
    assert lost.status_code == 503
    [task] = tasks.tasks.values()
    assert task["status"] == "failed" and "not published" in task["error"]
    publisher.down = False
    assert client.post("/v1/training-runs", json={}, headers=auth("admin-a")).status_code == 202
