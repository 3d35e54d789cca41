"""`?tenant=` on POST /v1/search and GET /v1/content/{id}: an operator key searches and reads
as any tenant; a key of another tenant naming a tenant not its own is refused (403) and records
no search event in that tenant's sessions; a lower scope is refused (over the in-memory gateway
rig of tests/unit/test_api_contract.py, with an operator key added)."""

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
from gateway.security import RateLimiter
from tests.unit.test_api_contract import Embedder, Experiments, Publisher, Store, Tasks, problem

KEYS = {"a": ("tenant-a", ["publish", "search", "admin"]), "b": ("tenant-b", ["publish", "search", "admin"]),
        "publish": ("tenant-a", ["publish"]), "operator": ("ops", ["search", "operator"])}


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer secret-{name}"}


class TenantStore(Store):
    """The rig's store, noting whose items each search read."""

    def __init__(self) -> None:
        self.searched: list[str] = []

    async def vector_search(self, version: str, tenant: str, query: Any, k: int, filters: Any
                            ) -> list[tuple[str, float]]:
        self.searched.append(tenant)
        return await super().vector_search(version, tenant, query, k, filters)


@pytest.fixture()
def rig() -> Iterator[tuple[TestClient, TenantStore, Publisher]]:
    records = [{"key_id": name, "key_sha256": hash_key(f"secret-{name}"), "tenant": tenant, "scopes": scopes}
               for name, (tenant, scopes) in KEYS.items()]
    app = create_app(Settings(api_keys_json=json.dumps(records)))
    store, publisher = TenantStore(), Publisher()
    fakes: dict[Any, Any] = {deps.publisher: publisher, deps.store: store, deps.embedder: Embedder(),
                             deps.experiments: Experiments(), deps.tasks: Tasks()}
    for dependency, fake in fakes.items():
        app.dependency_overrides[dependency] = _returning(fake)
    with TestClient(app) as client:
        app.state.resources.limiter = RateLimiter(10_000, 10_000)  # no PostgreSQL here
        yield client, store, publisher


def _returning(fake: Any) -> Any:
    # A closure, not a default argument: FastAPI would take that for a parameter and copy it.
    def dependency() -> Any:
        return fake
    return dependency


SEARCH = {"query": "cats", "k": 3, "session_id": "s-1"}


def test_an_operator_searches_and_reads_as_a_tenant(rig: tuple[TestClient, TenantStore, Publisher]) -> None:
    client, store, publisher = rig
    found = client.post("/v1/search?tenant=tenant-a", json=SEARCH, headers=auth("operator"))
    assert found.status_code == 200, found.text
    assert store.searched == ["tenant-a"]
    assert [e.tenant for _, e in publisher.sent] == ["tenant-a"]  # the session is the tenant's
    item = client.get("/v1/content/doc-1?tenant=tenant-a", headers=auth("operator"))
    assert item.status_code == 200 and item.json()["title"] == "One"
    # Its own tenant by default, which holds no such item.
    assert client.get("/v1/content/doc-1", headers=auth("operator")).status_code == 404


Rig = tuple[TestClient, TenantStore, Publisher]


def test_another_tenants_key_and_a_lower_scope_are_refused(rig: Rig) -> None:
    client, store, publisher = rig
    refused = client.post("/v1/search?tenant=tenant-a", json=SEARCH, headers=auth("b"))
    assert refused.status_code == 403 and problem(refused)["errors"][0]["field"] == "tenant"
    assert client.get("/v1/content/doc-1?tenant=tenant-a", headers=auth("b")).status_code == 403
    assert client.post("/v1/search?tenant=tenant-a", json=SEARCH, headers=auth("publish")).status_code == 403
    assert client.get("/v1/content/doc-1?tenant=tenant-a", headers=auth("publish")).status_code == 403
    assert client.post("/v1/search?tenant=tenant-a", json=SEARCH).status_code == 401
    # Nothing was searched in tenant-a's name, nor a search event recorded in its sessions.
    assert store.searched == [] and publisher.sent == []
    # Naming its own tenant is the same as naming none.
    own = client.post("/v1/search?tenant=tenant-b", json=SEARCH, headers=auth("b"))
    assert own.status_code == 200 and store.searched == ["tenant-b"]
    assert [e.tenant for _, e in publisher.sent] == ["tenant-b"]
    bad = client.post("/v1/search?tenant=Not%20A%20Tenant", json=SEARCH, headers=auth("operator"))
    assert bad.status_code == 422
