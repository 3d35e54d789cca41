"""The REST gateway over the real stack, through HTTP."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.adapters.session_store import MongoSessionStore
from core.api_keys import hash_key
from core.config import Settings
from core.sessions import session_key
from infra.process import Component
from infra.services import gateway_service
from tests.conftest import _run

pytestmark = pytest.mark.e2e

KEYS = {
    "admin-a": ("tenant-a", ["publish", "search", "admin"], None),
    "search-a": ("tenant-a", ["search"], None),
    "publish-a": ("tenant-a", ["publish"], None),
    "admin-b": ("tenant-b", ["publish", "search", "admin"], None),
    "slow-a": ("tenant-a", ["search"], (0.2, 2)),
    # Fuzzing writes with an admin key would start training runs and roll versions out at random:
    # the admin and operator keys fuzz every read (GET) operation, the others every operation.
    "fuzz-a": ("tenant-a", ["publish", "search"], None),
    "fuzz-search": ("fuzz", ["search"], None),
    "fuzz-publish": ("fuzz", ["publish"], None),
    "fuzz-admin": ("fuzz-admin", ["admin"], None),
    "fuzz-operator": ("fuzz-operator", ["operator"], None),
}
FUZZ_KEYS = {"fuzz-a": [], "fuzz-search": [], "fuzz-publish": [],
             "fuzz-admin": ["--include-method", "GET"], "fuzz-operator": ["--include-method", "GET"]}
SECRET = {name: f"key-{name}-{uuid.uuid4().hex}" for name in KEYS}


@pytest.fixture(scope="module")
def gateway(
    test_settings: Settings, kafka: Component, postgres: Component, mongodb: Component,
    triton: Component, indexer_service: Component, sessions_service: Component,
) -> Iterator[str]:
    records = [
        {"key_id": name, "key_sha256": hash_key(SECRET[name]), "tenant": tenant, "scopes": scopes,
         **({"rate_per_s": limit[0], "burst": limit[1]} if limit else {})}
        for name, (tenant, scopes, limit) in KEYS.items()
    ]
    settings = test_settings.model_copy(update={
        "api_keys_json": json.dumps(records), "gateway_max_body_bytes": 200_000, "gateway_max_batch": 50,
    })
    for _ in _run(gateway_service(settings)):
        yield settings.gateway_url


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRET[name]}"}


def wait_for_search(
    client: httpx.Client, key: str, query: str, expect_id: str, **extra: Any
) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        response = client.post("/v1/search", json={"query": query, "k": 5, **extra}, headers=auth(key))
        assert response.status_code in (200, 409), response.text
        body: dict[str, Any] = response.json()
        if response.status_code == 200 and any(r["id"] == expect_id for r in body["results"]):
            return body
        assert time.monotonic() < deadline, f"{expect_id} not searchable: {body}"
        time.sleep(0.3)


def test_content_published_is_found_by_search(gateway: str) -> None:
    with httpx.Client(base_url=gateway, timeout=30) as client:
        item = {"id": "g-cat", "title": "Cats", "text": "Cats purr and chase mice.", "version": 1,
                "metadata": {"kind": "animal"}}
        accepted = client.post("/v1/content", json=item, headers=auth("admin-a"))
        assert accepted.status_code == 202 and len(accepted.json()["event_ids"]) == 1
        batch = {"items": [
            {"id": "g-rocket", "text": "Rockets burn propellant to reach orbit.", "version": 1},
            {"id": "g-bread", "text": "Bread is baked from flour, water and yeast.", "version": 1},
        ]}
        assert client.post("/v1/content", json=batch, headers=auth("publish-a")).status_code == 202
        body = wait_for_search(client, "search-a", "an animal that purrs", "g-cat")
        assert body["results"][0]["id"] == "g-cat"
        assert body["results"][0]["metadata"] == {"kind": "animal"} and body["model_version"]
        wait_for_search(client, "search-a", "flour and yeast", "g-bread", mode="hybrid")

        assert client.delete("/v1/content/g-rocket", headers=auth("publish-a")).status_code == 202
        deadline = time.monotonic() + 60
        def rocket_found() -> bool:
            response = client.post("/v1/search", json={"query": "rocket orbit", "k": 5},
                                   headers=auth("search-a"))
            return any(r["id"] == "g-rocket" for r in response.json()["results"])
        while rocket_found():
            assert time.monotonic() < deadline
            time.sleep(0.3)


def test_results_explain_themselves_with_the_matching_chunk_and_score_parts(gateway: str) -> None:
    """A long item's snippet is the text of its chunk closest to the query (a later chunk here,
    not the start of the text); a hybrid hit names its vector and keyword parts."""
    baking = "Bakers knead dough from flour, water, salt and yeast, then let it rise for hours. " * 20
    lighthouse = "The lighthouse keeper trimmed the lamp wick each evening before the storm. " * 3
    with httpx.Client(base_url=gateway, timeout=30) as client:
        item = {"id": "g-long", "title": "A long story", "text": baking + lighthouse, "version": 1,
                "metadata": {"kind": "story"}}
        assert client.post("/v1/content", json=item, headers=auth("admin-a")).status_code == 202
        body = wait_for_search(client, "search-a", "lighthouse keeper lamp", "g-long", mode="hybrid")
        hit = next(r for r in body["results"] if r["id"] == "g-long")
        assert hit["title"] == "A long story" and hit["metadata"] == {"kind": "story"}
        assert "lighthouse keeper" in hit["snippet"] and not hit["snippet"].startswith("A long story")
        assert len(hit["snippet"]) <= 300
        parts = hit["score_parts"]
        assert parts["vector"]["rank"] >= 1 and parts["keyword"]["rank"] >= 1
        fused = 0.5 * parts["vector"]["normalised"] + 0.5 * parts["keyword"]["normalised"]
        assert abs(hit["score"] - fused) < 1e-9
        plain = client.post("/v1/search", json={"query": "kneading bread dough", "k": 5},
                            headers=auth("search-a"))
        first = next(r for r in plain.json()["results"] if r["id"] == "g-long")
        assert "knead dough" in first["snippet"] and first["score_parts"] is None


async def test_search_and_clicks_with_a_session_id_end_as_one_session_document(
    gateway: str, session_store: MongoSessionStore
) -> None:
    session_id = f"s-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        item = {"id": "s-tea", "text": "Green tea is brewed from the leaves of Camellia sinensis.",
                "version": 1}
        assert (await client.post("/v1/content", json=item, headers=auth("admin-a"))).status_code == 202
        deadline = time.monotonic() + 60
        while True:
            found = await client.post("/v1/search", json={"query": "brewing green tea", "k": 3},
                                      headers=auth("search-a"))
            if any(r["id"] == "s-tea" for r in found.json().get("results", [])):
                break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.3)
        searched = await client.post("/v1/search", headers=auth("admin-a"), json={
            "query": "brewing green tea", "k": 3, "session_id": session_id})
        rank = 1 + [r["id"] for r in searched.json()["results"]].index("s-tea")
        clicked = await client.post("/v1/clicks", headers=auth("publish-a"), json={"events": [
            {"type": "click", "session_id": session_id, "content_id": "s-tea", "rank": rank},
            {"type": "conversion", "session_id": session_id, "content_id": "s-tea", "value": 3.5},
        ]})
        assert clicked.status_code == 202
    key = session_key("tenant-a", session_id)
    deadline = time.monotonic() + 60
    while (doc := await session_store.get(key)) is None or len(doc["event_ids"]) < 3:
        assert time.monotonic() < deadline, f"session document incomplete: {doc}"
        await asyncio.sleep(0.3)
    [search] = doc["searches"]
    assert search["query"] == "brewing green tea"
    assert search["model_version"] == searched.json()["model_version"]
    assert [c["content_id"] for c in search["clicks"]] == ["s-tea"]
    assert [c["content_id"] for c in search["conversions"]] == ["s-tea"]
    assert doc["tenant"] == "tenant-a"


def test_tenants_with_the_same_ids_see_only_their_own(gateway: str) -> None:
    with httpx.Client(base_url=gateway, timeout=30) as client:
        for key, text in (("admin-a", "Volcanoes erupt lava and ash."),
                          ("admin-b", "Violins have four strings and a bow.")):
            response = client.post("/v1/content", json={"id": "shared-id", "text": text, "version": 1},
                                   headers=auth(key))
            assert response.status_code == 202
        wait_for_search(client, "admin-b", "string instrument", "shared-id")
        wait_for_search(client, "admin-a", "lava", "shared-id")
        b_results = client.post("/v1/search", json={"query": "lava and ash", "k": 10},
                                headers=auth("admin-b")).json()["results"]
        assert [r["id"] for r in b_results] == ["shared-id"]
        a_hit = [r for r in client.post("/v1/search", json={"query": "volcano", "k": 10},
                                        headers=auth("admin-a")).json()["results"] if r["id"] == "shared-id"]
        assert a_hit and a_hit[0]["title"] == ""
        # Another tenant's event, published as one's own, is refused.
        refused = client.post("/v1/events/content-upserted", headers=auth("admin-a"), json={
            "id": "x", "text": "y", "version": 1, "tenant": "tenant-b"})
        assert refused.status_code == 403


def test_auth_scopes_and_problem_json(gateway: str) -> None:
    with httpx.Client(base_url=gateway, timeout=30) as client:
        none = client.post("/v1/search", json={"query": "q"})
        assert none.status_code == 401
        assert none.headers["content-type"] == "application/problem+json"
        assert client.post("/v1/search", json={"query": "q"},
                           headers={"Authorization": "Bearer nope"}).status_code == 401
        assert client.post("/v1/search", json={"query": "q"},
                           headers={"X-API-Key": SECRET["search-a"]}).status_code in (200, 409)
        forbidden = client.post("/v1/content", json={"id": "a", "text": "b", "version": 1},
                                headers=auth("search-a"))
        assert forbidden.status_code == 403 and "publish" in forbidden.json()["detail"]
        assert client.post("/v1/search", json={"query": "q"}, headers=auth("publish-a")).status_code == 403
        assert client.post("/v1/models/1/activate", headers=auth("search-a")).status_code == 403

        invalid = client.post("/v1/content", json={"id": "a", "text": "", "version": 0},
                              headers=auth("admin-a"))
        assert invalid.status_code == 422
        fields = {e["field"] for e in invalid.json()["errors"]}
        assert any("version" in f for f in fields) and any("text" in f for f in fields)


def test_limits(gateway: str) -> None:
    with httpx.Client(base_url=gateway, timeout=30) as client:
        huge = client.post("/v1/content", headers={**auth("admin-a"), "content-type": "application/json"},
                           content=json.dumps({"id": "big", "text": "x" * 300_000, "version": 1}))
        assert huge.status_code == 413
        too_many = {"items": [{"id": f"i{i}", "text": "t", "version": 1} for i in range(51)]}
        assert client.post("/v1/content", json=too_many, headers=auth("admin-a")).status_code == 413
        assert client.post("/v1/search", json={"query": "q", "k": 1000},
                           headers=auth("admin-a")).status_code == 422
        assert client.post("/v1/search", json={"query": "q" * 5000},
                           headers=auth("admin-a")).status_code == 422
        statuses = [client.get("/v1/tasks", headers=auth("slow-a")).status_code for _ in range(4)]
        assert statuses[:2] == [200, 200] and 429 in statuses
        limited = client.get("/v1/tasks", headers=auth("slow-a"))
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1


def test_training_run_is_a_task_of_the_callers_tenant(gateway: str) -> None:
    with httpx.Client(base_url=gateway, timeout=30) as client:
        accepted = client.post("/v1/training-runs", json={"epochs": 1, "min_sessions": 5},
                               headers=auth("admin-a"))
        assert accepted.status_code == 202
        task_id = accepted.json()["task_id"]
        task = client.get(f"/v1/tasks/{task_id}", headers=auth("search-a"))
        assert task.status_code == 200 and task.json()["type"] == "training"
        assert client.get(f"/v1/tasks/{task_id}", headers=auth("admin-b")).status_code == 404
        assert any(t["id"] == task_id for t in client.get(
            "/v1/tasks?type=training", headers=auth("admin-a")).json())


def test_models_readiness_and_docs(gateway: str) -> None:
    with httpx.Client(base_url=gateway, timeout=30) as client:
        models = client.get("/v1/models", headers=auth("search-a")).json()
        assert models["active_version"] in {v["version"] for v in models["versions"]}
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert client.get("/openapi.json").json()["paths"]["/v1/search"]
        assert "content-upserted" in json.dumps(client.get("/asyncapi.json").json())
        assert "http_requests_total" in client.get("/metrics").text or \
            "http_request_duration" in client.get("/metrics").text


@pytest.mark.parametrize("key", list(FUZZ_KEYS))
def test_schemathesis_finds_no_server_errors(gateway: str, key: str) -> None:
    """With a key of each scope: the OpenAPI document's operations answer no 5xx."""
    run = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "run", f"{gateway}/openapi.json",
         "--checks", "not_a_server_error", "--max-examples", "15",
         "--header", f"Authorization: Bearer {SECRET[key]}", *FUZZ_KEYS[key],
         "--exclude-path", "/metrics", "--generation-deterministic", "--request-timeout", "30"],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


def test_events_accept_only_what_the_keys_scopes_allow(gateway: str) -> None:
    with httpx.Client(base_url=gateway, timeout=30) as client:
        theirs = client.post("/v1/training-runs", json={"epochs": 1, "min_sessions": 100000},
                             headers=auth("admin-b"))
        assert theirs.status_code == 202
        b_task = client.get(f"/v1/tasks/{theirs.json()['task_id']}", headers=auth("admin-b")).json()
        run = {"run_id": f"run-{uuid.uuid4().hex}", "min_sessions": 100000}
        refused = client.post("/v1/events/training-requested", json=run, headers=auth("publish-a"))
        assert refused.status_code == 403 and "'admin' scope" in refused.json()["detail"]
        for topic, body in (("model-published", {"model_version": "9", "registry_version": 9, "run_id": "r",
                                                  "artifact_uri": "file:///tmp/evil", "metrics": {}}),
                            ("reindex-requested", {"model_version": "9"})):
            never = client.post(f"/v1/events/{topic}", json=body, headers=auth("admin-a"))
            assert never.status_code == 403 and "not accepted from outside" in never.json()["detail"]
        # Tenant A cannot continue (or overwrite) tenant B's run by naming its id.
        taken = client.post("/v1/events/training-requested", headers=auth("admin-a"),
                            json={**run, "run_id": b_task["id"]})
        assert taken.status_code == 409
        after = client.get(f"/v1/tasks/{b_task['id']}", headers=auth("admin-b")).json()
        assert after["details"] == b_task["details"] and after["created_at"] == b_task["created_at"]
        # One unfinished training run per tenant. A trainer started by an earlier test of the
        # session may finish a run (rejected: no sessions) at any moment, so a second request is
        # refused exactly while the tenant's run is unfinished, before and after it is sent.
        def status(task_id: str, key: str) -> str:
            return str(client.get(f"/v1/tasks/{task_id}", headers=auth(key)).json()["status"])

        mine = client.post("/v1/events/training-requested", json=run, headers=auth("admin-a"))
        if mine.status_code == 202:
            assert client.get(f"/v1/tasks/{run['run_id']}", headers=auth("search-a")).status_code == 200
            assert client.get(f"/v1/tasks/{run['run_id']}", headers=auth("admin-b")).status_code == 404
            mine = client.post("/v1/training-runs", json={}, headers=auth("admin-a"))
        if mine.status_code == 409:
            pending = mine.json()["detail"].split("not finished: ")[1].split(" ")[0]
            assert client.get(f"/v1/tasks/{pending}", headers=auth("admin-a")).status_code == 200
        else:
            assert mine.status_code == 202
            assert status(str(run["run_id"]), "admin-a") not in ("pending", "running")
        # B's own run is B's turn, not A's: B is refused only by its own unfinished run.
        b_before = status(b_task["id"], "admin-b")
        again_b = client.post("/v1/training-runs", json={}, headers=auth("admin-b"))
        if again_b.status_code == 409:
            assert b_task["id"] in again_b.json()["detail"]
        else:
            assert again_b.status_code == 202, again_b.text
            assert b_before not in ("pending", "running") or status(b_task["id"], "admin-b") not in (
                "pending", "running")
        too_many = {"events": [{"type": "click", "session_id": "s", "content_id": "c", "rank": 1}] * 51}
        capped = client.post("/v1/clicks", json=too_many, headers=auth("publish-a"))
        assert capped.status_code == 413 and "at most 50" in capped.json()["detail"]
