"""The OpenAPI document tells the truth: every limit it declares is what the route enforces
(the limit passes, one more is refused naming the field), every operation declares its
problem+json errors, and errors name the field and the fix. Over fakes, no component runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.api_keys import hash_key
from core.config import Settings
from core.domain import Embeddings
from gateway import deps
from gateway.main import create_app
from gateway.security import RateLimiter
from producers.publisher import Delivery
from schemas.envelope import INT64_MAX

KEYS = {"all": ("tenant-a", ["publish", "search", "admin"]), "other": ("tenant-b", ["publish", "search"]),
        "publish": ("tenant-a", ["publish"])}
MAX_BATCH = 7


def auth(name: str = "all") -> dict[str, str]:
    return {"Authorization": f"Bearer secret-{name}"}


class Publisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    async def publish(self, topic: Any, event: Any) -> Delivery:
        return (await self.publish_many(topic, [event]))[0]

    async def publish_many(self, topic: Any, events: Any) -> list[Delivery]:
        self.sent += [(str(topic), e) for e in events]
        return [Delivery(str(topic), 0, n, "k", None) for n, _ in enumerate(events)]

    async def delete_content(self, item_id: str, tenant: str = "default") -> Delivery:
        self.sent.append(("content-upserted", None))
        return Delivery("content-upserted", 0, 0, f"{tenant}/{item_id}", None)


class Store:
    """What search and GET /v1/content read: one tenant-a item indexed by versions 1 and 2."""

    def for_tenant(self, tenant: str) -> Store:
        return self

    async def owners(self) -> dict[str, str | None]:
        return {"1": None, "2": None}

    async def dimensions(self) -> dict[str, int]:
        return {"1": 4, "2": 4}

    async def fusion_weight(self, version: str) -> float | None:
        return None

    async def active_version(self) -> str | None:
        return "2"

    async def vector_search(self, version: str, tenant: str, query: Any, k: int, filters: Any
                            ) -> list[tuple[str, float]]:
        return [(f"doc-{n}", 1.0 - n / 1000) for n in range(k)]

    async def text_search(self, tenant: str, query: str, k: int, filters: Any) -> list[tuple[str, float]]:
        return []

    async def describe(self, tenant: str, ids: Any) -> dict[str, tuple[str, dict[str, Any]]]:
        return {i: (i, {}) for i in ids}

    async def item_record(self, tenant: str, item_id: str) -> dict[str, Any] | None:
        if tenant != "tenant-a" or item_id not in ("doc-1", "shelf/doc-1"):
            return None
        return {"id": item_id, "title": "One", "text": "the first", "metadata": {"year": 2001},
                "version": 3, "indexed_at": datetime(2026, 1, 1, tzinfo=UTC),
                "indexes": [
                    {"version": "1", "status": "retired", "active": False, "chunks": 1, "item_version": 2},
                    {"version": "2", "status": "active", "active": True, "chunks": 2, "item_version": 3}]}


class Embedder:
    async def embed(self, texts: list[str], version: str, *, lane: str = "bulk") -> Embeddings:
        return Embeddings(np.ones((len(texts), 4), dtype=np.float32), "model", version)


class Splits:
    async def get_split(self) -> None:
        return None


class Experiments:
    splits = Splits()

    async def split(self, tenant: str) -> None:
        return None


class Tasks:
    def __init__(self) -> None:
        self.tasks: dict[str, dict[str, Any]] = {}

    async def create(self, task_id: str, type: str, tenant: str, details: Any = None
                     ) -> tuple[dict[str, Any], bool]:
        self.tasks[task_id] = {"id": task_id, "type": type, "tenant": tenant, "status": "pending"}
        return self.tasks[task_id], True

    async def get(self, task_id: str, tenant: str | None = None) -> dict[str, Any] | None:
        return self.tasks.get(task_id)

    async def update(self, task_id: str, **fields: Any) -> dict[str, Any] | None:
        return self.tasks[task_id]

    async def take_turn(self, type: str, tenant: str, task_id: str) -> dict[str, Any] | None:
        return None

    async def list(self, tenant: str, type: Any, status: Any, limit: int) -> list[dict[str, Any]]:
        return []


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    records = [{"key_id": name, "key_sha256": hash_key(f"secret-{name}"), "tenant": tenant, "scopes": scopes}
               for name, (tenant, scopes) in KEYS.items()]
    app = create_app(Settings(api_keys_json=json.dumps(records), gateway_max_batch=MAX_BATCH,
                              gateway_max_k=12, gateway_max_query_chars=40))
    fakes: dict[Any, Any] = {deps.publisher: Publisher(), deps.store: Store(), deps.embedder: Embedder(),
                             deps.experiments: Experiments(), deps.tasks: Tasks()}
    for dependency, fake in fakes.items():
        app.dependency_overrides[dependency] = lambda fake=fake: fake
    with TestClient(app) as c:
        app.state.resources.limiter = RateLimiter(10_000, 10_000)  # no PostgreSQL here
        app.state.resources.tasks = lambda: _async(fakes[deps.tasks])
        yield c


async def _async(value: Any) -> Any:
    return value


def schema(client: TestClient, name: str) -> dict[str, Any]:
    return client.get("/openapi.json").json()["components"]["schemas"][name]  # type: ignore[no-any-return]


def refused(response: Any, field: str, status: int = 422) -> bool:
    body = response.json()
    return (response.status_code == status and response.headers["content-type"] == "application/problem+json"
            and any(e["field"] == field for e in body.get("errors", [])))


# --- declared limits are enforced limits ------------------------------------------------------
def item(n: int) -> dict[str, Any]:
    return {"id": f"doc-{n}", "text": "hello", "version": 1}


def click(n: int) -> dict[str, Any]:
    return {"type": "click", "session_id": "s", "content_id": f"doc-{n}", "rank": 1}


def test_k_and_query_length_are_declared_as_enforced(client: TestClient) -> None:
    properties = schema(client, "SearchRequest")["properties"]
    k, chars = properties["k"]["maximum"], properties["query"]["maxLength"]
    assert (k, chars) == (12, 40)  # the settings of this gateway, not constants
    assert client.post("/v1/search", json={"query": "q", "k": k}, headers=auth()).status_code == 200
    assert refused(client.post("/v1/search", json={"query": "q", "k": k + 1}, headers=auth()), "k")
    assert client.post("/v1/search", json={"query": "q" * chars}, headers=auth()).status_code == 200
    assert refused(client.post("/v1/search", json={"query": "q" * (chars + 1)}, headers=auth()), "query")


@pytest.mark.parametrize(("path", "schema_name", "key", "make"), [
    ("/v1/content", "ContentBatch", "items", item), ("/v1/clicks", "SessionEvents", "events", click)])
def test_batch_sizes_are_declared_as_enforced(client: TestClient, path: str, schema_name: str, key: str,
                                              make: Any) -> None:
    limit = schema(client, schema_name)["properties"][key]["maxItems"]
    assert limit == MAX_BATCH
    assert client.post(path, json={key: [make(n) for n in range(limit)]}, headers=auth()).status_code == 202
    over = client.post(path, json={key: [make(n) for n in range(limit + 1)]}, headers=auth())
    assert refused(over, key, 413) and f"at most {limit}" in over.json()["detail"]
    # Even when every entry is also wrong: one 413 naming the limit, not a list of each entry's errors.
    wrong = client.post(path, json={key: [{"id": n} for n in range(limit + 1)]}, headers=auth())
    assert refused(wrong, key, 413) and len(wrong.content) < 1000


@pytest.mark.parametrize(("path", "schema_name", "field", "body"), [
    ("/v1/training-runs", "TrainingRunRequest", "min_sessions", {}),
    ("/v1/training-runs", "TrainingRunRequest", "epochs", {}),
    ("/v1/content", "ContentItem", "version", {"id": "doc", "text": "t"}),
    ("/v1/clicks", "SessionEventIn", "rank", {"type": "click", "session_id": "s", "content_id": "c"}),
])
def test_integer_fields_are_bounded_as_declared(client: TestClient, path: str, schema_name: str, field: str,
                                                body: dict[str, Any]) -> None:
    declared = schema(client, schema_name)["properties"][field]
    maximum = next(o["maximum"] for o in [declared, *declared.get("anyOf", [])] if "maximum" in o)
    assert maximum <= INT64_MAX  # what PostgreSQL's bigint and MongoDB's 8-byte int hold
    assert client.post(path, json={**body, field: maximum}, headers=auth()).status_code == 202
    assert refused(client.post(path, json={**body, field: maximum + 1}, headers=auth()), field)
    assert refused(client.post(path, json={**body, field: 2**70}, headers=auth()), field)


def test_model_versions_are_numbers_a_bigint_holds(client: TestClient) -> None:
    declared = schema(client, "ReindexRequest")["properties"]["model_version"]["pattern"]
    assert declared == r"^[0-9]{1,18}$"
    assert client.post("/v1/reindex", json={"model_version": "9" * 18}, headers=auth()).status_code == 202
    too_long = client.post("/v1/reindex", json={"model_version": "9" * 19}, headers=auth())
    assert refused(too_long, "model_version")


def test_tasks_limit_is_declared_as_enforced(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/v1/tasks"]["get"]
    limit = next(p for p in operation["parameters"] if p["name"] == "limit")["schema"]["maximum"]
    assert client.get(f"/v1/tasks?limit={limit}", headers=auth()).status_code == 200
    assert refused(client.get(f"/v1/tasks?limit={limit + 1}", headers=auth()), "limit")


def test_item_ids_are_bounded_alike_for_upsert_delete_and_read(client: TestClient) -> None:
    declared = schema(client, "ContentItem")["properties"]["id"]["maxLength"]
    operations = client.get("/openapi.json").json()["paths"]["/v1/content/{item_id}"]
    for method in ("get", "delete"):
        parameter = operations[method]["parameters"][0]
        assert parameter["schema"]["maxLength"] == declared == 512
    longest, over = "x" * declared, "x" * (declared + 1)
    assert client.delete(f"/v1/content/{longest}", headers=auth()).status_code == 202
    assert refused(client.delete(f"/v1/content/{over}", headers=auth()), "item_id")
    assert refused(client.post("/v1/content", json={**item(0), "id": over}, headers=auth()), "id")
    assert refused(client.get(f"/v1/content/{over}", headers=auth()), "item_id")


def test_events_topic_is_an_enum_of_what_clients_may_publish(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/v1/events/{topic}"]["post"]
    topic = next(p for p in operation["parameters"] if p["name"] == "topic")
    assert topic["schema"]["enum"] == ["clicks", "content-upserted", "training-requested"]
    for name in topic["schema"]["enum"]:
        assert client.post(f"/v1/events/{name}", json={}, headers=auth()).status_code in (202, 422)
    assert client.post("/v1/events/model-published", json={}, headers=auth()).status_code == 403
    assert client.post("/v1/events/nope", json={}, headers=auth()).status_code == 404


# --- every operation declares its problem responses --------------------------------------------
def test_every_operation_declares_problem_json_errors(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    assert document["components"]["schemas"]["Problem"]["required"] == [
        "type", "title", "status", "detail", "instance"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            errors = {s: r for s, r in responses.items() if s.startswith(("4", "5"))}
            if operation.get("security"):
                assert {"401", "403", "429", "503"} <= set(errors), (method, path)
            if "requestBody" in operation:
                assert {"413", "422"} <= set(errors), (method, path)
            for status, response in errors.items():
                if path == "/readyz":
                    continue
                content = response["content"]
                assert list(content) == ["application/problem+json"], (method, path, status)
                assert content["application/problem+json"]["schema"] == {
                    "$ref": "#/components/schemas/Problem"}
    assert "404" in document["paths"]["/v1/content/{item_id}"]["get"]["responses"]
    assert "409" in document["paths"]["/v1/search"]["post"]["responses"]


def test_swagger_ui_is_served_from_the_package(client: TestClient) -> None:
    html = client.get("/docs")
    assert html.status_code == 200 and "cdn" not in html.text.lower()
    assert "https://" not in html.text and "http://" not in html.text
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"):
        asset = f"/docs/assets/{name}"
        assert asset in html.text and client.get(asset).status_code == 200
    assert client.get("/docs/assets/swagger-ui.css").headers["content-type"].startswith("text/css")
    for missing in ("/docs/assets/..%2Fcore.py", "/docs/assets/redoc.standalone.js", "/redoc"):
        assert client.get(missing).status_code == 404


# --- errors name the field and the fix ----------------------------------------------------------
def problem(response: Any) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/problem+json", response.text
    return response.json()  # type: ignore[no-any-return]


def fields(response: Any) -> list[str]:
    return [e["field"] for e in problem(response)["errors"]]


@pytest.mark.parametrize("body", [{}, {"query": ""}, {"query": " \t\n "}])
def test_a_missing_empty_or_blank_query_is_field_query(client: TestClient, body: dict[str, Any]) -> None:
    response = client.post("/v1/search", json=body, headers=auth())
    assert response.status_code == 422 and fields(response) == ["query"]


def test_a_body_that_is_not_json_says_it_must_be_json(client: TestClient) -> None:
    response = client.post("/v1/search", content=b"query=cats",
                           headers={**auth(), "content-type": "application/json"})
    assert response.status_code == 422 and fields(response) == ["(body)"]
    assert "must be JSON" in problem(response)["detail"]


def test_a_click_without_type_names_the_types(client: TestClient) -> None:
    event = {"session_id": "s", "content_id": "doc-1", "rank": 1}
    response = client.post("/v1/events/clicks", json=event, headers=auth())
    assert response.status_code == 422 and fields(response) == ["type"]
    assert "one of 'search', 'click', 'conversion'" in problem(response)["detail"]
    assert "discriminator" not in response.text
    direct = client.post("/v1/clicks", json=event, headers=auth())
    assert direct.status_code == 422 and fields(direct) == ["type"]
    wrong = client.post("/v1/events/clicks", json={**event, "type": "tap"}, headers=auth())
    assert "'tap' is not a type of this topic" in problem(wrong)["detail"]


def test_content_errors_name_the_one_shape_the_request_tried(client: TestClient) -> None:
    single = client.post("/v1/content", json={"id": "doc", "text": "t"}, headers=auth())
    assert fields(single) == ["version"] and "read as one item" in problem(single)["detail"]
    batch = client.post("/v1/content", json={"items": [{"id": "doc", "text": "t"}]}, headers=auth())
    assert fields(batch) == ["items.0.version"] and "read as a batch" in problem(batch)["detail"]


def test_unknown_filter_operators_are_refused_naming_them(client: TestClient) -> None:
    for filters, field in (({"year": {"$gt": 2000}}, "filters.year"), ({"$or": [{"a": 1}]}, "filters"),
                           ({"tags": [{"$in": ["a"]}]}, "filters.tags[0]")):
        response = client.post("/v1/search", json={"query": "q", "filters": filters}, headers=auth())
        assert response.status_code == 422 and fields(response) == [field], filters
        assert "unknown operator" in problem(response)["detail"]
    plain = client.post("/v1/search", json={"query": "q", "filters": {"year": 2001}}, headers=auth())
    assert plain.status_code == 200
    not_json = client.post("/v1/search", content=b'{"query": "q", "filters": {"score": NaN}}',
                           headers={**auth(), "content-type": "application/json"})
    assert not_json.status_code == 422 and fields(not_json) == ["filters.score"]


# --- GET /v1/content/{id} -------------------------------------------------------------------------
def test_an_item_shows_as_stored_with_its_indexes(client: TestClient) -> None:
    response = client.get("/v1/content/doc-1", headers=auth())
    assert response.status_code == 200
    body = response.json()
    stored = (body["version"], body["title"], body["text"], body["metadata"])
    assert stored == (3, "One", "the first", {"year": 2001})
    assert body["indexed_at"].startswith("2026-01-01")
    # Version 1 still holds chunks of item version 2: not searchable there as it is now.
    assert body["searchable_in"] == ["2"]
    assert [i["chunks"] for i in body["indexes"]] == [1, 2]
    # An id with "/" (an upsert takes it) is read and deleted by the same path.
    assert client.get("/v1/content/shelf/doc-1", headers=auth()).json()["id"] == "shelf/doc-1"
    deleted = client.delete("/v1/content/shelf/doc-1", headers=auth())
    assert deleted.status_code == 202 and deleted.json()["id"] == "shelf/doc-1"
