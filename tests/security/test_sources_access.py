"""/v1/sources: who may add, see and remove a source (over in-memory fakes of its ports)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient

from core.api_keys import hash_key
from core.config import Settings
from gateway.main import create_app
from gateway.security import RateLimiter
from tests.unit.source_fakes import FakeConnect, FakeStore, admin


def key(key_id: str, tenant: str, scopes: list[str]) -> dict[str, Any]:
    return {"key_id": key_id, "key_sha256": hash_key(f"{key_id}-key"), "tenant": tenant, "scopes": scopes}


KEYS = [key("a-admin", "a", ["admin"]), key("a-publish", "a", ["publish", "search"]),
        key("b-admin", "b", ["admin"]), key("ops", "platform", ["operator"])]
BODY = {"name": "articles", "dsn": "postgresql://cdc:s3cret@db:5432/cms", "table": "public.articles",
        "id_column": "id", "text_columns": ["body"]}


def auth(key_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key_id}-key"}


@contextmanager
def client() -> Iterator[tuple[TestClient, FakeStore, FakeConnect]]:
    sources, store, connect, _ = admin()
    with TestClient(create_app(Settings(api_keys_json=json.dumps(KEYS)))) as c:
        resources = c.app.state.resources  # type: ignore[attr-defined]
        resources.limiter = RateLimiter(100, 100)
        resources._opened["sources"] = sources
        yield c, store, connect


def test_a_tenant_admin_adds_its_own_source_and_the_password_is_never_shown() -> None:
    with client() as (c, store, connect):
        created = c.post("/v1/sources", json=BODY, headers=auth("a-admin"))
        assert created.status_code == 201, created.text
        assert created.json()["tenant"] == "a"
        assert "s3cret" not in created.text
        assert store.specs["articles"].tenant == "a" and "flywheel-source-articles" in connect.connectors
        assert c.post("/v1/sources", json=BODY, headers=auth("a-admin")).status_code == 409


def test_a_lower_scope_and_another_tenant_are_refused_and_nothing_of_theirs_changes() -> None:
    with client() as (c, store, connect):
        assert c.post("/v1/sources", json=BODY, headers=auth("a-publish")).status_code == 403
        assert store.specs == {}
        assert c.post("/v1/sources", json=BODY, headers=auth("a-admin")).status_code == 201
        before = (dict(store.specs), dict(connect.connectors))
        assert c.get("/v1/sources/articles", headers=auth("b-admin")).status_code == 404
        assert c.delete("/v1/sources/articles", headers=auth("b-admin")).status_code == 404
        assert c.get("/v1/sources", headers=auth("b-admin")).json() == []
        other = c.post("/v1/sources", json={**BODY, "name": "x", "tenant": "a"}, headers=auth("b-admin"))
        assert other.status_code == 403 and "operator" in other.json()["detail"]
        assert c.get("/v1/sources", headers=auth("a-publish")).status_code == 403
        assert c.get("/v1/sources", headers={}).status_code == 401
        assert (dict(store.specs), dict(connect.connectors)) == before


def test_an_operator_sees_and_removes_any_tenants_source() -> None:
    with client() as (c, store, _):
        assert c.post("/v1/sources", json={**BODY, "tenant": "b"}, headers=auth("ops")).status_code == 201
        assert [s["name"] for s in c.get("/v1/sources", headers=auth("ops")).json()] == ["articles"]
        assert c.get("/v1/sources?tenant=b", headers=auth("ops")).json()[0]["tenant"] == "b"
        removed = c.delete("/v1/sources/articles", headers=auth("ops"))
        assert removed.status_code == 200 and removed.json()["removed"] is True
        assert store.specs == {}


def test_bad_specs_answer_422_naming_the_field() -> None:
    with client() as (c, _, _):
        for update, field in (({"table": "articles"}, "table"), ({"text_columns": []}, "text"),
                              ({"name": "Bad Name"}, "name")):
            response = c.post("/v1/sources", json={**BODY, **update}, headers=auth("a-admin"))
            assert response.status_code == 422, (update, response.text)
            assert field in response.text
            assert response.headers["content-type"] == "application/problem+json"
