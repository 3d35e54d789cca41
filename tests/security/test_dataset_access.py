"""/v1/datasets through a real gateway over real MongoDB: a tenant admin uploads, lists, shows
and deletes its own tenant's judgments, an operator any tenant's; another tenant's admin gets
404 (or 403 naming a tenant not its own), a key without `admin` 403, and nothing of the other
tenant's changes. Uploads are validated line by line, rejects reported as `flywheel publish`'s."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest

from core.config import Settings
from infra.process import Component
from tests.conftest import gateway_with_keys

pytestmark = pytest.mark.integration

TA, TB = f"da-{uuid.uuid4().hex[:8]}", f"db-{uuid.uuid4().hex[:8]}"
KEYS = {
    "admin-a": (TA, ["admin"]), "publish-a": (TA, ["publish", "search"]),
    "admin-b": (TB, ["admin"]), "operator": ("platform", ["operator"]),
}
SECRET = {name: f"key-{name}-{uuid.uuid4().hex}" for name in KEYS}
JUDGMENTS = "\n".join([
    json.dumps({"query": "how is tea made", "item_id": "tea-1", "grade": 2}),
    '{"query": "broken"',
    json.dumps({"query": "espresso", "item_id": "coffee-1"}),
]) + "\n"


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRET[name]}"}


@pytest.fixture(scope="module")
def gateway(
    test_settings: Settings, kafka: Component, postgres: Component, mongodb: Component
) -> Iterator[str]:
    yield from gateway_with_keys(test_settings, KEYS, SECRET)


async def test_a_tenant_admin_uploads_and_reads_its_own_judgments(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as client:
        made = await client.post("/v1/datasets", headers=auth("admin-a"),
                                 json={"name": "clicks-2026", "judgments": JUDGMENTS})
        assert made.status_code == 201, made.text
        body = made.json()
        assert (body["tenant"], body["name"], body["status"]) == (TA, "clicks-2026", "ready")
        assert body["format"] == "jsonl"
        assert body["stats"] == {"judgments": 2, "queries": 2, "items": 2, "relevant": 2, "rejected": 1}
        [reject] = body["rejects"]
        assert (reject["line"], reject["raw"]) == (2, '{"query": "broken"') and "errors" not in reject
        assert reject["reason"].startswith("not JSON")

        shown = (await client.get("/v1/datasets/clicks-2026", headers=auth("admin-a"))).json()
        assert shown["sample"][0] == {"query": "how is tea made", "item_id": "tea-1", "grade": 2.0}
        assert [d["name"] for d in (await client.get("/v1/datasets", headers=auth("admin-a"))).json()] == [
            "clicks-2026"]
        again = await client.post("/v1/datasets", headers=auth("admin-a"),
                                  json={"name": "clicks-2026", "judgments": JUDGMENTS})
        assert again.status_code == 409 and again.json()["errors"][0]["field"] == "name"

        beir = await client.post("/v1/datasets", headers=auth("admin-a"), json={
            "name": "scifact-train", "format": "beir", "qrels": "query-id\tcorpus-id\tscore\n7\tdoc-3\t1\n",
            "queries": json.dumps({"_id": "7", "text": "does tea help"}) + "\n"})
        assert beir.status_code == 201 and beir.json()["stats"]["judgments"] == 1, beir.text

        refused = await client.post("/v1/datasets", headers=auth("admin-a"),
                                    json={"name": "bad", "judgments": '{"query": "q"}\nnot json\n'})
        assert refused.status_code == 422
        lines = [(e["field"], e["line"]) for e in refused.json()["errors"]]
        assert lines == [("judgments", 1), ("judgments", 2)]
        assert "item_id" in refused.json()["errors"][0]["reason"]
        unnamed = await client.post("/v1/datasets", headers=auth("admin-a"),
                                    json={"name": "x y", "judgments": ""})
        assert unnamed.status_code == 422 and unnamed.json()["errors"][0]["field"] == "name"

        deleted = await client.delete("/v1/datasets/scifact-train", headers=auth("admin-a"))
        assert deleted.status_code == 200 and deleted.json()["deleted"] is True
        assert (await client.get("/v1/datasets/scifact-train", headers=auth("admin-a"))).status_code == 404


async def test_another_tenant_and_a_lower_scope_are_refused_and_nothing_changes(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as client:
        assert (await client.post("/v1/datasets", headers=auth("admin-a"),
                                  json={"name": "mine", "judgments": JUDGMENTS})).status_code == 201
        before = (await client.get("/v1/datasets/mine", headers=auth("admin-a"))).json()

        assert (await client.get("/v1/datasets/mine", headers=auth("admin-b"))).status_code == 404
        assert (await client.delete("/v1/datasets/mine", headers=auth("admin-b"))).status_code == 404
        assert (await client.get("/v1/datasets", headers=auth("admin-b"))).json() == []
        other = await client.post("/v1/datasets", headers=auth("admin-b"),
                                  json={"name": "mine", "judgments": JUDGMENTS, "tenant": TA})
        assert other.status_code == 403 and "operator" in other.json()["detail"]
        named = await client.delete(f"/v1/datasets/mine?tenant={TA}", headers=auth("admin-b"))
        assert named.status_code == 403
        for method, path in (("POST", "/v1/datasets"), ("GET", "/v1/datasets"), ("GET", "/v1/datasets/mine"),
                             ("DELETE", "/v1/datasets/mine")):
            body = {"name": "mine", "judgments": JUDGMENTS} if method == "POST" else None
            lower = await client.request(method, path, json=body, headers=auth("publish-a"))
            assert lower.status_code == 403
            assert (await client.request(method, path, json=body)).status_code == 401
        assert (await client.get("/v1/datasets/mine", headers=auth("admin-a"))).json() == before

        # B's dataset of the same name is B's own.
        assert (await client.post("/v1/datasets", headers=auth("admin-b"),
                                  json={"name": "mine", "judgments": JUDGMENTS})).status_code == 201
        assert (await client.get("/v1/datasets/mine", headers=auth("admin-a"))).json() == before


async def test_an_operator_manages_any_tenants_datasets(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as client:
        made = await client.post("/v1/datasets", headers=auth("operator"),
                                 json={"name": "ops", "judgments": JUDGMENTS, "tenant": TB})
        assert made.status_code == 201 and made.json()["tenant"] == TB
        assert (await client.get("/v1/datasets/ops", headers=auth("admin-b"))).status_code == 200
        listed = (await client.get(f"/v1/datasets?tenant={TB}", headers=auth("operator"))).json()
        assert "ops" in {d["name"] for d in listed} and {d["tenant"] for d in listed} == {TB}
        removed = await client.delete(f"/v1/datasets/ops?tenant={TB}", headers=auth("operator"))
        assert removed.status_code == 200
        assert (await client.get("/v1/datasets/ops", headers=auth("admin-b"))).status_code == 404


async def test_a_training_run_uses_only_its_own_tenants_datasets(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as client:
        made = await client.post("/v1/datasets", headers=auth("admin-b"),
                                 json={"name": "b-golden", "judgments": JUDGMENTS})
        assert made.status_code == 201, made.text
        before = (await client.get("/v1/tasks", headers=auth("admin-a"))).json()
        # Tenant A names tenant B's dataset: refused, naming the field, and no run starts.
        asked = await client.post("/v1/training-runs", headers=auth("admin-a"),
                                  json={"datasets": ["b-golden"], "use_sessions": False})
        assert asked.status_code == 422, asked.text
        assert asked.headers["content-type"].startswith("application/problem+json")
        assert [e["field"] for e in asked.json()["errors"]] == ["datasets"]
        held = await client.post("/v1/training-runs", headers=auth("admin-a"),
                                 json={"eval_dataset": "b-golden"})
        assert held.status_code == 422 and held.json()["errors"][0]["field"] == "eval_dataset"
        # A lower scope may not request training at all.
        low = await client.post("/v1/training-runs", headers=auth("publish-a"),
                                json={"datasets": ["b-golden"]})
        assert low.status_code == 403
        # Training only on the judged set it is evaluated on is refused before anything is stored.
        same = await client.post("/v1/training-runs", headers=auth("admin-b"),
                                 json={"datasets": ["b-golden"], "eval_dataset": "b-golden"})
        assert same.status_code == 422 and "eval_dataset" in same.text
        assert (await client.get("/v1/tasks", headers=auth("admin-a"))).json() == before
        shown = await client.get("/v1/datasets/b-golden", headers=auth("admin-b"))
        assert shown.status_code == 200 and shown.json()["stats"]["judgments"] == 2
