"""Red team, against the real stack: every operation of the gateway's OpenAPI document, walked
with tenant A's keys of every scope and aimed at tenant B.

B has real state (indexed items with vectors, a session with a search and a click, tasks, a
dataset, a dead letter, a source, a version of its own lineage and an A/B split on it), read
straight from PostgreSQL, MongoDB and Kafka before and after, and compared byte for byte. Each
attempt aimed at B is refused: 403 (the scope, or a tenant not the key's) or 404 (not the
caller's to see); a few name a field of the body that does not exist in A's tenant (422) or a
run id that is taken (409). A's keys using a route on their own tenant with B's ids (an item
id, a session id, a dataset name) act on A's data only, and no answer to A holds anything of
B's. Keys without a scope get 403 on every route that needs it, and A's admin 403 on every
operator route. An operation of the document missing from the walker's table fails the test:
a new route is walked from the day it is added.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest
import pytest_asyncio
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

from core.adapters.dataset_store import DatasetStore
from core.adapters.pgvector import PgVectorStore
from core.adapters.session_store import MongoSessionStore
from core.adapters.source_store import PgSourceStore
from core.adapters.task_store import TaskStore
from core.api_keys import hash_key
from core.config import Settings
from core.rollout import reindex_task_id
from core.sessions import session_key
from core.sources import SourceSpec
from infra.process import Component
from infra.services import gateway_service
from kafka_ops import dead_letter_queue as dlq
from producers.publisher import Publisher
from schemas.topics import TOPICS
from tests.conftest import _run
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

A, B = f"walk-a-{uuid.uuid4().hex[:6]}", f"walk-b-{uuid.uuid4().hex[:6]}"
MARK = f"bsecret{uuid.uuid4().hex[:10]}"  # in every text of B's: no answer to A may hold it
KEYS = {
    "search-a": (A, ["search"]), "publish-a": (A, ["publish"]), "admin-a": (A, ["admin"]),
    "admin-b": (B, ["admin"]), "operator": ("platform", ["operator"]),
}
A_KEYS = ("search-a", "publish-a", "admin-a")
GRANTED = {"search-a": {"search"}, "publish-a": {"publish"}, "admin-a": {"admin", "search", "publish"}}
SECRET = {name: f"key-{name}-{uuid.uuid4().hex}" for name in KEYS}
B_ITEMS = {"b-doc-1": f"A domestic cat purrs and hunts mice {MARK}.",
           "b-doc-2": f"A rocket engine burns propellant to reach orbit {MARK}."}
SESSION = f"sess-{uuid.uuid4().hex[:8]}"
DATASET = f"golden-{uuid.uuid4().hex[:6]}"
SOURCE = f"b_src_{uuid.uuid4().hex[:8]}"
B_VERSION = str(9_000_000_000 + uuid.uuid4().int % 1_000_000_000)  # B's own, in its lineage only
REFUSED = frozenset({403, 404})


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRET[name]}"}


@dataclass
class Target:
    """What of B's the attempts name."""

    base_version: str = ""
    training_task: str = ""
    reindex_task: str = ""
    letter: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class Attempt:
    """One request. With a key that holds `scope` its status is in `refused`, or, for a
    tenant's legitimate use of the route on its own tenant, `own` checks the answer; without
    the scope it is 403."""

    method: str
    path: str
    scope: str | None
    body: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    refused: frozenset[int] = REFUSED
    own: Callable[[httpx.Response], None] | None = None


def status(*codes: int) -> Callable[[httpx.Response], None]:
    def check(response: httpx.Response) -> None:
        assert response.status_code in codes, response.text
    return check


def only_a(response: httpx.Response) -> None:
    """A list of A's own: every entry of tenant A."""
    assert response.status_code == 200, response.text
    assert all(entry.get("tenant", A) == A for entry in response.json()), response.text


def operations(t: Target) -> dict[tuple[str, str], list[Attempt]]:
    """Every operation of the OpenAPI document, and what A's keys try on it."""
    click = {"type": "click", "session_id": SESSION, "content_id": "b-doc-1", "rank": 1}
    content = {"id": "b-doc-2", "title": "A's own", "text": "A's own copy of an id B uses", "version": 7}
    judgments = json.dumps({"query": "tea", "item_id": "a-doc", "grade": 1}) + "\n"
    source = {"name": SOURCE, "dsn": "postgresql://cdc:x@127.0.0.1:1/cms", "table": "public.articles",
              "id_column": "id", "text_columns": ["body"]}

    def ops(method: str, path: str, scope: str | None, *attempts: dict[str, Any]) -> tuple[
            tuple[str, str], list[Attempt]]:
        return (method, path), [Attempt(method, a.pop("path", path), a.pop("scope", scope), **a)
                                for a in attempts]

    def no_b_version(response: httpx.Response) -> None:
        assert response.status_code == 200, response.text
        body = response.json()
        assert B_VERSION not in {v["version"] for v in body["versions"]} and body["tenant"] == A
        assert body["ab_split"] is None or body["ab_split"]["candidate_version"] != B_VERSION

    def whoami(response: httpx.Response) -> None:
        assert response.status_code == 200 and response.json()["tenant"] == A, response.text

    def tenants(response: httpx.Response) -> None:
        assert response.status_code == 200 and {r["tenant"] for r in response.json()} <= {A}, response.text

    def no_b_tasks(response: httpx.Response) -> None:
        assert response.status_code == 200, response.text
        assert {task["tenant"] for task in response.json()} <= {A}, response.text

    def embedded(response: httpx.Response) -> None:
        assert response.status_code == 200 and response.json()["model"] != B_VERSION, response.text

    def redriven_none(response: httpx.Response) -> None:
        assert response.status_code == 200 and response.json()["redriven"] == 0, response.text

    def a_dataset(response: httpx.Response) -> None:
        assert response.status_code == 404 or response.json()["tenant"] == A, response.text

    task_paths = (f"/v1/tasks/{t.training_task}", f"/v1/tasks/{t.reindex_task}")
    p, o = t.letter
    return dict([
        ops("GET", "/healthz", None, {"own": status(200)}),
        ops("GET", "/readyz", None, {"own": status(200, 503)}),
        ops("GET", "/metrics", None, {"own": status(200)}),
        ops("GET", "/asyncapi.json", None, {"own": status(200)}),
        ops("POST", "/v1/content", "publish",
            {"body": content, "own": status(202)},
            {"body": {**content, "id": "b-doc-1", "tenant": B}, "refused": frozenset({403, 422})},
            {"body": {"items": [{**content, "tenant": B}]}, "refused": frozenset({403, 422})}),
        ops("GET", "/v1/content/{item_id}", "search",
            {"path": "/v1/content/b-doc-1"}, {"path": f"/v1/content/{B}/b-doc-1"},
            {"path": "/v1/content/b-doc-1", "params": {"tenant": B}}),
        ops("DELETE", "/v1/content/{item_id}", "publish",
            # A's own item of that id (A has none): B's stays.
            {"path": "/v1/content/b-doc-1", "own": status(202)},
            {"path": f"/v1/content/{B}/b-doc-1", "own": status(202)},
            # No `tenant` parameter here: ignored, the tombstone is A's own again.
            {"path": "/v1/content/b-doc-1", "params": {"tenant": B}, "own": status(202)}),
        ops("POST", "/v1/events/{topic}", "publish", *topic_attempts(t, click)),
        ops("POST", "/v1/search", "search",
            {"body": {"query": "a cat that purrs", "k": 10, "session_id": SESSION}, "own": status(200)},
            {"body": {"query": "rocket orbit", "filters": {"tenant": B}}, "own": status(200)},
            {"body": {"query": "cat", "tenant": B}, "refused": frozenset({403, 422})}),
        ops("POST", "/v1/embeddings", "search",
            {"body": {"input": "a cat", "model": B_VERSION}},
            {"body": {"input": "a cat", "model": "active"}, "own": embedded}),
        ops("POST", "/v1/clicks", "publish",
            {"body": click, "own": status(202)},
            {"body": {**click, "tenant": B}, "refused": frozenset({403, 422})},
            {"body": {"events": [{**click, "tenant": B}]}, "refused": frozenset({403, 422})}),
        ops("POST", "/v1/training-runs", "admin",
            # B's dataset is none of A's (422 naming the field); B's version not A's to start from.
            {"body": {"datasets": [DATASET], "use_sessions": False}, "refused": frozenset({404, 422})},
            {"body": {"eval_dataset": DATASET}, "refused": frozenset({404, 422})},
            {"body": {"base_version": B_VERSION}},
            {"body": {"tenant": B}, "refused": frozenset({403, 422})}),
        ops("POST", "/v1/reindex", "admin", {"body": {"model_version": B_VERSION}},
            {"body": {"model_version": B_VERSION, "tenant": B}, "refused": frozenset({403, 422})}),
        ops("GET", "/v1/tasks/{task_id}", "search", *({"path": path} for path in task_paths)),
        ops("GET", "/v1/tasks", "search", {"own": no_b_tasks}, {"params": {"tenant": B}}),
        ops("POST", "/v1/tasks/{task_id}/cancel", "admin",
            *({"path": f"{path}/cancel"} for path in task_paths)),
        ops("POST", "/v1/tasks/{task_id}/retry", "admin",
            *({"path": f"{path}/retry"} for path in task_paths)),
        ops("GET", "/v1/models", "search", {"own": no_b_version}, {"params": {"tenant": B}}),
        ops("PUT", "/v1/models/ab-split", "admin",
            {"body": {"candidate_version": B_VERSION, "percent": 50}},
            {"body": {"candidate_version": t.base_version, "percent": 50}, "params": {"tenant": B}}),
        ops("DELETE", "/v1/models/ab-split", "admin", {"params": {"tenant": B}},
            {"own": status(204)}),  # A's own split (none): B's stays
        ops("DELETE", "/v1/models/{version}/adjustments", "admin",
            {"path": f"/v1/models/{B_VERSION}/adjustments"},
            {"path": f"/v1/models/{B_VERSION}/adjustments", "params": {"tenant": B}}),
        ops("POST", "/v1/models/{version}/activate", "admin",
            {"path": f"/v1/models/{B_VERSION}/activate"},
            {"path": f"/v1/models/{B_VERSION}/activate", "params": {"tenant": B}},
            {"path": f"/v1/models/{t.base_version}/activate", "params": {"tenant": B}}),
        ops("GET", "/v1/admin/status", "operator", {}),
        ops("GET", "/v1/admin/topics", "operator", {}),
        ops("GET", "/v1/admin/tenants", "admin", {"own": tenants}, {"params": {"tenant": B}, "own": tenants}),
        ops("GET", "/v1/admin/dlq", "admin", {"own": status(200)},
            {"params": {"tenant": B}, "own": status(200)}),
        ops("GET", "/v1/admin/dlq/{topic}/{partition}/{offset}", "admin",
            {"path": f"/v1/admin/dlq/clicks/{p}/{o}"}, {"path": f"/v1/admin/dlq/clicks.dlq/{p}/{o}"}),
        ops("POST", "/v1/admin/dlq/{topic}/redrive", "admin",
            {"path": "/v1/admin/dlq/clicks/redrive", "body": {"dry_run": True}, "own": redriven_none},
            {"path": "/v1/admin/dlq/clicks/redrive", "body": {}, "own": redriven_none}),
        ops("POST", "/v1/sources", "admin",
            {"body": {**source, "tenant": B}},
            # The name is B's: taken (409), or A's DSN refused first (422); B's source stays.
            {"body": source, "refused": frozenset({409, 422})}),
        ops("GET", "/v1/sources", "admin", {"own": only_a}, {"params": {"tenant": B}}),
        ops("GET", "/v1/sources/{name}", "admin", {"path": f"/v1/sources/{SOURCE}"}),
        ops("DELETE", "/v1/sources/{name}", "admin", {"path": f"/v1/sources/{SOURCE}"},
            {"path": f"/v1/sources/{SOURCE}", "params": {"delete_items": "true"}}),
        ops("POST", "/v1/datasets", "admin",
            {"body": {"name": DATASET, "judgments": judgments, "tenant": B}},
            {"body": {"name": DATASET, "judgments": judgments}, "own": status(201)}),  # A's own, same name
        ops("GET", "/v1/datasets", "admin", {"own": only_a}, {"params": {"tenant": B}}),
        ops("GET", "/v1/datasets/{name}", "admin",
            {"path": f"/v1/datasets/{DATASET}", "params": {"tenant": B}},
            {"path": f"/v1/datasets/{DATASET}", "own": a_dataset}),
        ops("DELETE", "/v1/datasets/{name}", "admin",
            {"path": f"/v1/datasets/{DATASET}", "params": {"tenant": B}},
            {"path": f"/v1/datasets/{DATASET}", "own": status(200, 404)}),  # A's own
        ops("GET", "/v1/admin/metrics/history", "operator", {}),
        ops("GET", "/v1/whoami", None, {"own": whoami}),
    ])


def topic_attempts(t: Target, click: dict[str, Any]) -> list[dict[str, Any]]:
    """Every topic of the registry: as B (403), on B's items, sessions and tasks."""
    training = {"run_id": f"run-{uuid.uuid4().hex}", "min_sessions": 1}
    bodies: dict[str, list[dict[str, Any]]] = {
        "content-upserted": [
            {"body": {"id": "b-doc-1", "text": "overwritten", "version": 99, "tenant": B}},
            {"body": {"id": "b-doc-2", "text": "A's own", "version": 8}, "own": status(202)}],
        "clicks": [{"body": {**click, "tenant": B}}, {"body": click, "own": status(202)}],
        "training-requested": [
            {"body": {**training, "tenant": B}, "scope": "admin"},
            {"body": {**training, "run_id": t.training_task}, "scope": "admin",
             "refused": frozenset({403, 404, 409})},  # B's run id: taken
            {"body": {**training, "base_version": B_VERSION}, "scope": "admin"}],
        # The platform's own: never from outside, whatever the scope.
        "model-published": [{"body": {"model_version": B_VERSION, "registry_version": 1, "run_id": "r",
                                      "artifact_uri": "http://evil.example/m.tar", "metrics": {},
                                      "tenant": B}, "scope": "operator"}],
        "reindex-requested": [{"body": {"model_version": B_VERSION, "tenant": B}, "scope": "operator"},
                              {"body": {"model_version": B_VERSION}, "scope": "operator"}],
    }
    assert set(bodies) == set(TOPICS), f"topics the walker does not try: {set(TOPICS) - set(bodies)}"
    attempts = [{"path": f"/v1/events/{topic}", **a} for topic, tried in bodies.items() for a in tried]
    return [*attempts, {"path": "/v1/events/clicks.dlq", "body": {**click, "tenant": B}}]


# --- the stack and B's state -------------------------------------------------------------
@pytest.fixture(scope="module")
def gateway(
    test_settings: Settings, kafka: Component, postgres: Component, mongodb: Component, triton: Component,
) -> Iterator[str]:
    # A generous rate: the walk sends a few hundred requests per key.
    records = [{"key_id": name, "key_sha256": hash_key(SECRET[name]), "tenant": tenant, "scopes": scopes,
                "rate_per_s": 1000.0, "burst": 10_000} for name, (tenant, scopes) in KEYS.items()]
    settings = test_settings.model_copy(update={"api_keys_json": json.dumps(records)})
    for _ in _run(gateway_service(settings)):
        yield settings.gateway_url


@pytest_asyncio.fixture(scope="module")
async def datasets(mongodb: Component, test_settings: Settings) -> AsyncIterator[DatasetStore]:
    store = await DatasetStore.connect(test_settings.mongo_uri, test_settings.mongo_db)
    yield store
    await store.close()


@pytest_asyncio.fixture(scope="module")
async def sources(postgres: Component, test_settings: Settings) -> AsyncIterator[PgSourceStore]:
    store = PgSourceStore(test_settings.postgres_dsn)
    yield store
    await store.remove(SOURCE)
    await store.close()


async def give_b_state(client: httpx.AsyncClient, store: PgVectorStore, sessions: MongoSessionStore,
                       tasks: TaskStore, sources: PgSourceStore, publisher: Publisher) -> Target:
    """B's items, indexed; a session with a search and a click; a failed training run and a
    running reindex; a dataset; a dead letter; a source; a version of its own, with a split."""
    items = [{"id": id_, "title": f"{id_} {MARK}", "text": text, "version": 1}
             for id_, text in B_ITEMS.items()]
    upserted = await client.post("/v1/content", headers=auth("admin-b"), json={"items": items})
    assert upserted.status_code == 202, upserted.text

    async def indexed() -> bool:
        return await store.count_items(B) == len(B_ITEMS)
    await wait_for(indexed, 300, what="B's items indexed")
    searched = await client.post("/v1/search", headers=auth("admin-b"),
                                 json={"query": "a pet that purrs", "session_id": SESSION})
    assert searched.status_code == 200, searched.text
    clicked = await client.post("/v1/clicks", headers=auth("admin-b"), json={
        "type": "click", "session_id": SESSION, "content_id": "b-doc-1", "rank": 1})
    assert clicked.status_code == 202, clicked.text

    async def folded() -> bool:
        doc = await sessions.get(session_key(B, SESSION))
        return doc is not None and len(doc["event_ids"]) >= 2
    await wait_for(folded, 120, what="B's session folded")

    uploaded = await client.post("/v1/datasets", headers=auth("admin-b"), json={
        "name": DATASET, "judgments": json.dumps({"query": f"cats {MARK}", "item_id": "b-doc-1"}) + "\n"})
    assert uploaded.status_code == 201, uploaded.text

    base = await store.active_version(B)
    assert base is not None
    await store.ensure_version(B, B_VERSION, (await store.dimensions())[base], "building", owner=B)
    await store.finish_version(B, B_VERSION)  # complete, B's rollback target
    split = await client.put("/v1/models/ab-split", headers=auth("admin-b"),
                             json={"candidate_version": B_VERSION, "percent": 10})
    assert split.status_code == 200, split.text

    training = f"run-{uuid.uuid4().hex}"
    await tasks.create(training, "training", B, {"min_sessions": 5, "epochs": 1, "gate_margin": 0.0})
    await tasks.update(training, status="failed", stage="failed", error=f"gate {MARK}")
    reindex = reindex_task_id(B_VERSION, B)
    await tasks.create(reindex, "reindex", B, {"model_version": B_VERSION, "activate": False})
    await tasks.update(reindex, status="running", stage="running")

    assert await sources.add(SourceSpec(name=SOURCE, tenant=B, dsn=f"postgresql://cdc:{MARK}@db:5432/cms",
                                        table="public.articles", id_column="id", text_columns=["body"]))
    producer = publisher._producer
    assert producer is not None
    letter = {"event_id": str(uuid.uuid4()), "type": "click", "schema_version": "1.0",
              "occurred_at": "2026-01-01T00:00:00Z", "tenant": B, "source": "tests",
              "session_id": SESSION, "content_id": f"b-doc-1-{MARK}", "rank": 1}
    sent = await producer.send_and_wait(
        "clicks.dlq", json.dumps(letter).encode(), key=SESSION.encode(),
        headers=[("dlq-error", b"MongoDB was down"), ("dlq-original-topic", b"clicks"),
                 ("dlq-original-partition", b"0"), ("dlq-original-offset", b"1")])
    return Target(base_version=base, training_task=training, reindex_task=reindex,
                  letter=(sent.partition, sent.offset))


RAW = CodecOptions(document_class=RawBSONDocument)


async def raw_docs(collection: Any, query: dict[str, Any]) -> list[bytes]:
    cursor = collection.with_options(codec_options=RAW).find(query).sort("_id", 1)
    return [doc.raw async for doc in cursor]


async def b_snapshot(store: PgVectorStore, sessions: MongoSessionStore, tasks: TaskStore,
                     datasets: DatasetStore, sources: PgSourceStore, bootstrap: str) -> dict[str, Any]:
    """B's state straight from the stores, as bytes (rows as JSON text, vectors in pgvector's
    binary form, documents as stored BSON, letters as read from Kafka)."""
    rows: dict[str, Any] = {}
    async with store.pool.connection() as conn:
        async def read(name: str, query: str, *args: Any) -> None:
            rows[name] = await (await conn.execute(query, args)).fetchall()

        for table in ("items", "deleted_items", "tenant_versions", "tenant_active", "tenant_ab_split",
                      "item_adjustments", "improver_tenant_state"):
            exists = await (await conn.execute("SELECT to_regclass(%s)", (table,))).fetchone()
            if exists is None or exists[0] is None:
                rows[table] = []  # made when the improver first runs: no rows of B's
                continue
            await read(table, f"SELECT row_to_json(t)::text FROM {table} t WHERE tenant = %s "
                              "ORDER BY row_to_json(t)::text", B)
        await read("model_versions", "SELECT row_to_json(m)::text FROM model_versions m WHERE owner = %s", B)
        versions = [row[0] for row in await (await conn.execute(
            "SELECT version FROM tenant_versions WHERE tenant = %s ORDER BY version", (B,))).fetchall()]
        for version in versions:
            await read(f"chunks_v{version}",
                       f"SELECT item_id, chunk_no, item_version, metadata::text, vector_send(embedding) "
                       f"FROM chunks_v{int(version)} WHERE tenant = %s ORDER BY item_id, chunk_no", B)
    spec = await sources.get(SOURCE)
    letters = {}
    for topic in dlq.dlq_topics():
        mine, pending = await dlq.tenant_letters(bootstrap, topic, B)
        letters[topic] = ([x.as_dict() for x in mine], [x.offset for x in pending])
    return {
        "pg": rows, "versions": versions,
        "sessions": await raw_docs(sessions.sessions, {"tenant": B}),
        "tasks": await raw_docs(tasks.tasks, {"tenant": B}),
        "turns": await raw_docs(tasks.turns, {"_id": {"$regex": f"/{B}$"}}),
        "datasets": await raw_docs(datasets.datasets, {"tenant": B}),
        "judgments": await raw_docs(datasets.judgments, {"dataset": f"{B}/{DATASET}"}),
        "source": spec.model_dump(mode="json") if spec else None,
        "letters": letters,
    }


async def settled(client: httpx.AsyncClient) -> bool:
    """The indexer and the sessions service have consumed everything published so far."""
    topics = (await client.get("/v1/admin/topics", headers=auth("operator"))).json()
    lags = {(g["group"], t["topic"]): g["lag"] for t in topics for g in t["groups"]}
    return lags.get(("indexer", "content-upserted")) == 0 and lags.get(("sessions", "clicks")) == 0


# --- the walk ------------------------------------------------------------------------------
def document_operations(document: dict[str, Any]) -> list[tuple[str, str]]:
    return [(method.upper(), path) for path, item in document["paths"].items()
            for method in item if method in ("get", "put", "post", "delete", "patch")]


def named_b(attempt: Attempt) -> Attempt:
    """`attempt` with `?tenant=` B: a key without the operator scope may name only its own."""
    return replace(attempt, params={**attempt.params, "tenant": B}, own=None,
                   refused=frozenset({403}) | (attempt.refused & {422} if attempt.own is None else set()))


def expect(attempt: Attempt, key: str, response: httpx.Response) -> None:
    said = f"{key} {attempt.method} {attempt.path} {attempt.params} {attempt.body}: {response.text[:300]}"
    if attempt.scope is not None and attempt.scope not in GRANTED[key]:
        assert response.status_code == 403, said
    elif attempt.own is not None:
        attempt.own(response)
    else:
        assert response.status_code in attempt.refused, said
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/problem+json"), said
    for secret in (MARK, SECRET["admin-b"], SECRET["operator"], os.environ.get("FLYWHEEL_KAFKA_PASSWORD")):
        assert secret and secret not in response.text, f"{said}: holds a secret of B's or the platform's"


async def test_every_operation_aimed_at_another_tenant_is_refused_and_changes_nothing(
    gateway: str, indexer_service: Component, sessions_service: Component, test_settings: Settings,
    store: PgVectorStore, session_store: MongoSessionStore, task_store: TaskStore,
    datasets: DatasetStore, sources: PgSourceStore, publisher: Publisher,
) -> None:
    bootstrap = test_settings.bootstrap_servers
    async with httpx.AsyncClient(base_url=gateway, timeout=120) as client:
        target = await give_b_state(client, store, session_store, task_store, sources, publisher)
        before = await b_snapshot(store, session_store, task_store, datasets, sources, bootstrap)
        assert before["pg"]["items"] and before["sessions"] and before["letters"]["clicks.dlq"][0]

        document = (await client.get("/openapi.json")).json()
        table = operations(target)
        listed = document_operations(document)
        assert sorted(set(listed) - set(table)) == [], "operations the walker does not cover: add them"
        assert sorted(set(table) - set(listed)) == [], "the walker's table names operations that are gone"

        walked = 0
        for operation in listed:
            tenant_param = any(p["name"] == "tenant" and p["in"] == "query"
                               for p in document["paths"][operation[1]][operation[0].lower()].get(
                                   "parameters", []))
            attempts = table[operation]
            if tenant_param:  # every attempt again, naming B: not the key's tenant, 403
                attempts = attempts + [named_b(a) for a in attempts if "tenant" not in a.params]
            for attempt in attempts:
                for key in A_KEYS:
                    response = await client.request(
                        attempt.method, attempt.path, params=attempt.params, headers=auth(key),
                        json=attempt.body if attempt.body is not None else None)
                    expect(attempt, key, response)
                    walked += 1
                if attempt.scope is not None:  # no key at all
                    assert (await client.request(attempt.method, attempt.path, params=attempt.params,
                                                 json=attempt.body)).status_code == 401
        assert walked >= 3 * len(listed)

        # What A's keys published on A's own tenant (B's ids in A's namespace) is consumed.
        await wait_for(lambda: settled(client), 180, what="the indexer and sessions caught up")

        async def a_copy() -> bool:
            return await store.item_record(A, "b-doc-2") is not None
        await wait_for(a_copy, 60, what="A's own item of B's id indexed")
        assert await session_store.get(session_key(A, SESSION)) is not None

    after = await b_snapshot(store, session_store, task_store, datasets, sources, bootstrap)
    for part in before:
        assert after[part] == before[part], f"B's {part} changed"


@pytest_asyncio.fixture(scope="module", autouse=True)
async def _forget_b_version(postgres: Component, store: PgVectorStore) -> AsyncIterator[None]:
    """B's version is a catalogue entry without a model: gone again after the module, so no
    deployer of a later test tries to serve it."""
    yield
    async with store.pool.connection() as conn:
        await conn.execute("DELETE FROM tenant_ab_split WHERE tenant = %s", (B,))
        await conn.execute("DELETE FROM tenant_versions WHERE version = %s", (B_VERSION,))
        await conn.execute("DELETE FROM model_versions WHERE version = %s", (B_VERSION,))
        await conn.execute(f"DROP TABLE IF EXISTS chunks_v{int(B_VERSION)}")
