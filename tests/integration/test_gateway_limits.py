"""Trust and bounds against the real components: per-key rate limits shared by every gateway
process (PostgreSQL), and task state machines that a final task cannot leave (MongoDB)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from core.adapters.task_store import TaskStore
from core.api_keys import hash_key
from core.config import Settings
from infra.process import Component
from infra.services import AsgiService, gateway_service
from tests.conftest import _run

pytestmark = pytest.mark.integration

KEY = f"key-limited-{uuid.uuid4().hex}"
WARM = f"key-warm-{uuid.uuid4().hex}"
RATE, BURST = 0.5, 4


@pytest.fixture(scope="module")
def two_gateways(test_settings: Settings, postgres: Component, mongodb: Component) -> Iterator[list[str]]:
    """Two gateway processes of one stack, with one key limited to RATE/s, bursts of BURST."""
    records = [{"key_id": "limited", "key_sha256": hash_key(KEY), "tenant": "limits",
                "scopes": ["search"], "rate_per_s": RATE, "burst": BURST},
               {"key_id": "warm", "key_sha256": hash_key(WARM), "tenant": "limits", "scopes": ["search"]}]
    first = test_settings.model_copy(update={"api_keys_json": json.dumps(records)})
    second = first.model_copy(update={"gateway_port": first.gateway_port + 1})
    for _ in _run(gateway_service(first)):
        for _ in _run(AsgiService(second, "gateway-2", "gateway.main:app", second.gateway_port, "/healthz",
                                  service="gateway")):
            urls = [first.gateway_url, second.gateway_url]
            # Until a gateway's PostgreSQL pool is open its requests are limited in memory:
            # open both pools (another key) before the limited key is measured.
            for _ in range(2):
                for url in urls:
                    httpx.get(f"{url}/v1/tasks", headers={"Authorization": f"Bearer {WARM}"}, timeout=30)
                time.sleep(1.5)
            yield urls


def test_two_gateways_share_one_keys_rate_limit(two_gateways: list[str]) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    clients = [httpx.Client(base_url=url, timeout=30, headers=headers) for url in two_gateways]
    try:
        began = time.monotonic()
        statuses = [[], []]  # type: list[list[int]]
        for n in range(3 * BURST):
            statuses[n % 2].append(clients[n % 2].get("/v1/tasks").status_code)
        elapsed = time.monotonic() - began
    finally:
        for client in clients:
            client.close()
    allowed = sum(s.count(200) for s in statuses)
    assert all(code in (200, 429) for s in statuses for code in s), statuses
    # One bucket for both processes: the burst and what refilled meanwhile, not twice that.
    assert BURST <= allowed <= BURST + int(elapsed * RATE) + 1, (statuses, elapsed)
    assert 200 in statuses[0] and 200 in statuses[1] and 429 in statuses[0] + statuses[1]


def test_a_refused_request_takes_no_token_and_says_when_to_retry(two_gateways: list[str]) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=two_gateways[1], timeout=30, headers=headers) as client:
        while (response := client.get("/v1/tasks")).status_code == 200:
            pass
        wait = int(response.headers["Retry-After"])
        assert response.status_code == 429 and 1 <= wait <= int(1 / RATE) + 1
        time.sleep(1 / RATE + 0.2)  # one token refilled, even though refused requests came meanwhile
        assert client.get("/v1/tasks").status_code == 200


async def test_a_final_task_never_changes_state(task_store: TaskStore) -> None:
    tid = f"task-{uuid.uuid4().hex}"
    await task_store.create(tid, "reindex", "tenant-a")
    await task_store.update(tid, status="running", stage="backfilling", progress=0.5)
    done = await task_store.update(tid, status="succeeded", stage="done", progress=1.0)
    assert done is not None and done["status"] == "succeeded"
    # A late progress report, an error note, or a status change: the task stays as it ended.
    for fields in ({"stage": "backfilling", "progress": 0.7}, {"error": "late note"},
                   {"status": "running", "stage": "preparing"}, {"status": "failed", "error": "x"}):
        after = await task_store.update(tid, **fields)
        assert after is not None
        assert {k: after.get(k) for k in ("status", "stage", "progress", "error", "updated_at")} == \
            {k: done.get(k) for k in ("status", "stage", "progress", "error", "updated_at")}, fields
    rejected = f"task-{uuid.uuid4().hex}"
    await task_store.create(rejected, "training", "tenant-a")
    await task_store.update(rejected, status="rejected", stage="rejected")
    assert (await task_store.update(rejected, status="running"))["status"] == "rejected"  # type: ignore[index]
    assert await task_store.update(f"task-{uuid.uuid4().hex}", stage="x") is None


async def test_a_failed_task_is_retried_only_by_an_explicit_status(task_store: TaskStore) -> None:
    tid = f"task-{uuid.uuid4().hex}"
    await task_store.create(tid, "deploy", "tenant-a")
    await task_store.update(tid, status="failed", stage="loading", error="boom")
    late = await task_store.update(tid, stage="warming_up", progress=0.65)
    assert late is not None and (late["status"], late["stage"]) == ("failed", "loading")
    retried = await task_store.update(tid, status="running", stage="validating", error=None)
    assert retried is not None and (retried["status"], retried["error"]) == ("running", None)


async def test_a_tenant_takes_one_training_turn_at_a_time(task_store: TaskStore) -> None:
    tenant, other = f"turns-{uuid.uuid4().hex[:6]}", f"turns-{uuid.uuid4().hex[:6]}"
    runs = [f"run-{uuid.uuid4().hex}" for _ in range(6)]
    for run in runs:
        await task_store.create(run, "training", tenant)
    # Six requests at once (as from several gateway processes): exactly one gets the turn.
    holders = await asyncio.gather(*(task_store.take_turn("training", tenant, run) for run in runs))
    winners = [run for run, holder in zip(runs, holders, strict=True) if holder is None]
    assert len(winners) == 1
    assert all(holder["id"] == winners[0] for holder in holders if holder is not None)
    assert await task_store.take_turn("training", tenant, winners[0]) is None  # its own turn still
    assert await task_store.take_turn("training", other, "run-of-another-tenant") is None
    await task_store.update(winners[0], status="running")
    blocked = await task_store.take_turn("training", tenant, runs[-1] if winners[0] != runs[-1] else runs[0])
    assert blocked is not None and blocked["id"] == winners[0]
    await task_store.update(winners[0], status="succeeded")
    successor = next(run for run in runs if run != winners[0])
    assert await task_store.take_turn("training", tenant, successor) is None
