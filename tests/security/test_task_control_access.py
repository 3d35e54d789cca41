"""Cancel and retry of tasks through a real gateway over real MongoDB and Kafka: the task's
own tenant's admin or an operator may; another tenant's admin gets 404 (the task is not
theirs to see), a key without `admin` 403, and the task does not change either way."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from core.adapters.task_store import TaskStore
from core.config import Settings
from infra.process import Component
from tests.conftest import gateway_with_keys

pytestmark = pytest.mark.integration

TA, TB = f"ta-{uuid.uuid4().hex[:8]}", f"tb-{uuid.uuid4().hex[:8]}"
KEYS = {
    "admin-a": (TA, ["admin"]), "publish-a": (TA, ["publish", "search"]),
    "admin-b": (TB, ["admin"]), "operator": ("platform", ["operator"]),
}
SECRET = {name: f"key-{name}-{uuid.uuid4().hex}" for name in KEYS}
COMPARED = ("status", "stage", "error", "cancel_requested_at", "links", "details", "updated_at")


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRET[name]}"}


@pytest.fixture(scope="module")
def gateway(
    test_settings: Settings, kafka: Component, postgres: Component, mongodb: Component
) -> Iterator[str]:
    yield from gateway_with_keys(test_settings, KEYS, SECRET)


async def a_task(tasks: TaskStore, tenant: str, status: str, type_: str = "training") -> dict[str, Any]:
    task_id = f"run-{uuid.uuid4().hex}" if type_ == "training" else f"{type_}-{uuid.uuid4().int % 10**9}"
    details = ({"min_sessions": 5, "epochs": 1, "gate_margin": 0.0} if type_ == "training"
               else {"model_version": task_id.split("-")[1], "activate": True})
    await tasks.create(task_id, type_, tenant, details)  # type: ignore[arg-type]
    if status != "pending":
        await tasks.update(task_id, status=status, stage=status)
    task = await tasks.get(task_id)
    assert task is not None
    return task


def unchanged(before: dict[str, Any], after: dict[str, Any] | None) -> bool:
    assert after is not None
    return all(before.get(k) == after.get(k) for k in COMPARED)


async def test_another_tenants_admin_and_a_lower_scope_are_refused_and_nothing_changes(
    gateway: str, task_store: TaskStore
) -> None:
    pending = await a_task(task_store, TA, "pending")
    failed = await a_task(task_store, TA, "failed")
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as client:
        for task in (pending, failed):
            for action in ("cancel", "retry"):
                url = f"/v1/tasks/{task['id']}/{action}"
                other = await client.post(url, headers=auth("admin-b"))
                assert other.status_code == 404, other.text
                assert other.headers["content-type"].startswith("application/problem+json")
                assert (await client.post(url, headers=auth("publish-a"))).status_code == 403
                assert (await client.post(url)).status_code == 401
                assert unchanged(task, await task_store.get(task["id"]))
            assert (await client.get(f"/v1/tasks/{task['id']}", headers=auth("admin-b"))).status_code == 404
    # Nothing was published for A: no new training task of tenant A exists.
    assert {t["id"] for t in await task_store.list(tenant=TA)} == {pending["id"], failed["id"]}


async def test_the_tenants_admin_cancels_and_retries_its_own_tasks(
    gateway: str, task_store: TaskStore
) -> None:
    pending = await a_task(task_store, TA, "pending")
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as client:
        cancelled = await client.post(f"/v1/tasks/{pending['id']}/cancel", headers=auth("admin-a"))
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled" and cancelled.json()["cancel_requested_at"]
        again = await client.post(f"/v1/tasks/{pending['id']}/cancel", headers=auth("admin-a"))
        assert again.status_code == 409 and "cancelled" in again.json()["detail"]
        assert again.json()["errors"][0]["field"] == "status"

        retried = await client.post(f"/v1/tasks/{pending['id']}/retry", headers=auth("admin-a"))
        assert retried.status_code == 202, retried.text
        new_id = retried.json()["task_id"]
        assert new_id != pending["id"] and retried.json()["status_url"] == f"/v1/tasks/{new_id}"
        new = (await client.get(f"/v1/tasks/{new_id}", headers=auth("admin-a"))).json()
        assert new["status"] == "pending" and new["details"]["retry_of"] == pending["id"]
        assert new["details"]["request"]["min_sessions"] == 5
        old = (await client.get(f"/v1/tasks/{pending['id']}", headers=auth("admin-a"))).json()
        assert old["links"]["retried_by"] == new_id and old["status"] == "cancelled"
        # A second retry of the same task while the new run is unfinished: one run at a time.
        busy = await client.post(f"/v1/tasks/{pending['id']}/retry", headers=auth("admin-a"))
        assert busy.status_code == 409 and new_id in busy.json()["detail"]

        # The operator may act on any tenant's task (and frees A's turn here).
        by_operator = await client.post(f"/v1/tasks/{new_id}/cancel", headers=auth("operator"))
        # Pending: cancelled at once. A trainer an earlier test started may have taken it (asked to
        # stop) or ended it already (409, final): never 404, the operator reaches any tenant's task.
        if by_operator.status_code == 409:
            assert "only a pending or running task" in by_operator.json()["detail"]
        else:
            assert by_operator.status_code == 200, by_operator.text
            cancelled_now = by_operator.json()
            assert cancelled_now["status"] == "cancelled" or (
                cancelled_now["status"] == "running" and cancelled_now["cancel_requested_at"])
        running = await a_task(task_store, TB, "running")
        asked = await client.post(f"/v1/tasks/{running['id']}/cancel", headers=auth("operator"))
        assert asked.status_code == 200, asked.text
        assert asked.json()["status"] == "running" and asked.json()["cancel_requested_at"]

        succeeded = await a_task(task_store, TA, "succeeded")
        for action in ("cancel", "retry"):
            refused = await client.post(f"/v1/tasks/{succeeded['id']}/{action}", headers=auth("admin-a"))
            assert refused.status_code == 409 and "succeeded" in refused.json()["detail"]
        missing = await client.post("/v1/tasks/no-such-task/cancel", headers=auth("admin-a"))
        assert missing.status_code == 404


async def test_a_reindex_is_retried_as_the_same_task_reopened(gateway: str, task_store: TaskStore) -> None:
    failed = await a_task(task_store, TA, "failed", "reindex")
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as client:
        retried = await client.post(f"/v1/tasks/{failed['id']}/retry", headers=auth("admin-a"))
        assert retried.status_code == 202, retried.text
        assert retried.json()["task_id"] == failed["id"]
    task = await task_store.get(failed["id"])
    assert task is not None and task["status"] == "pending" and task["details"]["retries"] == 1
    # No reindexer runs here: the task is left as it was found.
    await task_store.update(failed["id"], status="failed", stage="failed")


async def test_task_lists_are_the_tenants_own_and_an_operators_span_tenants(
    gateway: str, task_store: TaskStore
) -> None:
    mine = await a_task(task_store, TA, "pending")
    theirs = await a_task(task_store, TB, "failed")
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as client:
        async def listed(key: str, query: str = "") -> set[str]:
            response = await client.get(f"/v1/tasks?limit=500{query}", headers=auth(key))
            assert response.status_code == 200, response.text
            return {t["id"] for t in response.json()}

        assert mine["id"] in await listed("publish-a") and theirs["id"] not in await listed("publish-a")
        assert theirs["id"] in await listed("admin-b") and mine["id"] not in await listed("admin-b")
        assert {mine["id"], theirs["id"]} <= await listed("operator")
        only_b = await listed("operator", f"&tenant={TB}")
        assert theirs["id"] in only_b and mine["id"] not in only_b
        # Naming another tenant needs the operator scope; the key's own tenant may be named.
        refused = await client.get(f"/v1/tasks?tenant={TB}", headers=auth("admin-a"))
        assert refused.status_code == 403 and refused.json()["errors"][0]["field"] == "tenant"
        assert mine["id"] in await listed("admin-a", f"&tenant={TA}")
        # Who a key is: itself only.
        me = (await client.get("/v1/whoami", headers=auth("publish-a"))).json()
        assert (me["key_id"], me["tenant"], me["operator"]) == ("publish-a", TA, False)
        assert (await client.get("/v1/whoami", headers=auth("operator"))).json()["operator"] is True
        assert (await client.get("/v1/whoami")).status_code == 401
    assert unchanged(mine, await task_store.get(mine["id"]))
    assert unchanged(theirs, await task_store.get(theirs["id"]))
