"""GET /v1/admin/metrics/history spans tenants: only an operator key reads it. A tenant's admin
(of this tenant or another), lower scopes and no key are refused before Prometheus is asked,
and the window is one of a closed list (nothing else of the caller's reaches PromQL)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from core.api_keys import hash_key
from core.config import Settings
from gateway.main import create_app
from gateway.security import RateLimiter
from infra.process import Component

KEYS = {
    "search-a": ("tenant-a", ["search"]),
    "publish-a": ("tenant-a", ["publish", "search"]),
    "admin-a": ("tenant-a", ["admin"]),
    "admin-b": ("tenant-b", ["admin", "publish", "search"]),
    "operator": ("platform", ["operator"]),
}
PATH = "/v1/admin/metrics/history"


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer secret-{name}"}


def client_for(settings: Settings) -> Iterator[TestClient]:
    records = [{"key_id": name, "key_sha256": hash_key(f"secret-{name}"), "tenant": tenant, "scopes": scopes}
               for name, (tenant, scopes) in KEYS.items()]
    app = create_app(settings.model_copy(update={"api_keys_json": json.dumps(records)}))
    with TestClient(app) as client:
        app.state.resources.limiter = RateLimiter(100, 100)  # no PostgreSQL here
        yield client


@pytest.fixture
def client(prometheus: Component, test_settings: Settings) -> Iterator[TestClient]:
    """The gateway app reading the real Prometheus of the test stack."""
    yield from client_for(test_settings)


@pytest.mark.parametrize("key", ["search-a", "publish-a", "admin-a", "admin-b"])
def test_tenant_keys_are_refused(client: TestClient, key: str) -> None:
    response = client.get(PATH, headers=auth(key))
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "'operator' scope" in response.json()["detail"]


def test_no_key_and_a_wrong_key_are_refused(client: TestClient) -> None:
    assert client.get(PATH).status_code == 401
    assert client.get(PATH, headers={"Authorization": "Bearer fw_not-a-key"}).status_code == 401


def test_the_operator_reads_the_history_and_only_listed_windows(client: TestClient) -> None:
    response = client.get(PATH, params={"window": "15m"}, headers=auth("operator"))
    assert response.status_code == 200 and response.json()["available"] is True, response.text
    assert set(response.json()["series"]) == {"events_per_s", "lag", "searches_per_s", "dead_letters_per_s"}
    bad = client.get(PATH, params={"window": "up or vector(1)"}, headers=auth("operator"))
    assert bad.status_code == 422 and "window" in bad.text


def test_without_prometheus_the_answer_says_so() -> None:
    for client in client_for(Settings(prometheus_url="http://127.0.0.1:9")):
        response = client.get(PATH, headers=auth("operator"))
        assert response.status_code == 200
        body = response.json()
        assert body["available"] is False and "127.0.0.1:9" in body["detail"]
        assert all(series == [] for series in body["series"].values()) and len(body["series"]) == 4
