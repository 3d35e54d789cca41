"""GET /v1/content/{id} and POST /v1/embeddings: another tenant's key and a lower scope are
refused (over the in-memory gateway rig of tests/unit/test_api_contract.py)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.unit.test_api_contract import auth, client, problem

__all__ = ["client"]  # the rig's gateway, a pytest fixture


def test_an_item_of_another_tenant_is_404_and_a_lower_scope_403(client: TestClient) -> None:
    other = client.get("/v1/content/doc-1", headers=auth("other"))
    assert other.status_code == 404 and "doc-1" in problem(other)["detail"]
    assert client.get("/v1/content/doc-1", headers=auth("publish")).status_code == 403
    assert client.get("/v1/content/doc-1").status_code == 401


def test_embeddings_need_the_search_scope(client: TestClient) -> None:
    body = {"input": "a text", "model": "active"}
    assert client.post("/v1/embeddings", json=body, headers=auth("publish")).status_code == 403
    assert client.post("/v1/embeddings", json=body).status_code == 401
