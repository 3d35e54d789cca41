"""Every query of every Grafana dashboard (infra/grafana/dashboards) returns series from a real
Prometheus scraping the test stack, after a little traffic: content through the gateway, a
search in a session and a click, a record the indexer dead-letters. So no panel is empty
because a metric name drifted. The console's history route answers from the same Prometheus."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from core.api_keys import hash_key
from core.config import REPO_ROOT, Settings
from infra.process import Component
from infra.services import gateway_service
from producers.publisher import Publisher
from tests.conftest import _run

pytestmark = pytest.mark.integration

DASHBOARDS = sorted((REPO_ROOT / "infra" / "grafana" / "dashboards").glob("*.json"))
# What Grafana would put for its own variables over a short range, and "All" for ours.
BUILTIN = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}
TENANT = f"dash-{uuid.uuid4().hex[:8]}"
KEY = f"key-{uuid.uuid4().hex}"
OPERATOR_KEY = f"op-{uuid.uuid4().hex}"


def substitute(expr: str, variables: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match[1]
        if name in BUILTIN:
            return BUILTIN[name]
        assert name in variables, f"{expr}: ${name} is not a variable of the dashboard"
        return variables[name]

    return re.sub(r"\$(\w+)", value, expr)


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, query with variables substituted) of every panel target."""
    found = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        # Ours are multi-value with "All" = .*, matched with =~.
        variables = {v["name"]: v.get("allValue", ".*") for v in dashboard["templating"]["list"]}
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                found.append((path.stem, panel["title"], substitute(target["expr"], variables)))
    return found


@pytest.fixture(scope="module")
def gateway(
    test_settings: Settings, kafka: Component, postgres: Component, mongodb: Component, triton: Component,
) -> Iterator[str]:
    records = [{"key_id": "dash", "key_sha256": hash_key(KEY), "tenant": TENANT,
                "scopes": ["publish", "search", "admin"]},
               {"key_id": "dash-op", "key_sha256": hash_key(OPERATOR_KEY), "tenant": "platform",
                "scopes": ["operator"]}]
    settings = test_settings.model_copy(update={"api_keys_json": json.dumps(records)})
    for _ in _run(gateway_service(settings)):
        yield settings.gateway_url


async def drive_traffic(gateway: str, publisher: Publisher) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=gateway, headers=headers, timeout=60) as client:
        for n in range(3):
            response = await client.post("/v1/content", json={
                "id": f"d{n}", "text": f"dashboards show metric number {n}", "version": 1})
            assert response.status_code == 202, response.text
        session = f"s-{uuid.uuid4().hex[:8]}"
        deadline = time.monotonic() + 120
        while True:  # until the indexer has written the items
            response = await client.post("/v1/search", json={
                "query": "metric number", "k": 3, "session_id": session})
            if response.status_code == 200 and response.json()["results"]:
                break
            assert time.monotonic() < deadline, f"never searchable: {response.status_code} {response.text}"
            await asyncio.sleep(1)
        first = response.json()["results"][0]["id"]
        response = await client.post("/v1/clicks", json={
            "type": "click", "session_id": session, "content_id": first, "rank": 1})
        assert response.status_code == 202, response.text
    # Not JSON: the indexer parks it on content-upserted.dlq.
    producer = publisher._producer
    assert producer is not None
    await producer.send_and_wait("content-upserted", b"{not json", key=f"{TENANT}-poison".encode())


async def empty_queries(prometheus: str, queries: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    empty = []
    async with httpx.AsyncClient(base_url=prometheus, timeout=30) as client:
        for dashboard, title, expr in queries:
            response = await client.get("/api/v1/query", params={"query": expr})
            body = response.json()
            assert response.status_code == 200 and body["status"] == "success", (title, expr, body)
            if not body["data"]["result"]:
                empty.append((dashboard, title, expr))
    return empty


async def test_every_dashboard_query_returns_series(
    prometheus: Component, gateway: str, indexer_service: Component, sessions_service: Component,
    trainer_service: Component, publisher: Publisher,
) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 20
    await drive_traffic(gateway, publisher)
    # The lag reporters measure every 15 s, rates need two samples: a few minutes at most.
    deadline = time.monotonic() + 240
    while empty := await empty_queries(prometheus.url, queries):
        if time.monotonic() > deadline:
            pytest.fail("queries without a series (a metric name drifted, or nothing exposes it):\n"
                        + "\n".join(f"  {d} / {t}: {e}" for d, t, e in empty))
        await asyncio.sleep(5)


async def test_the_console_history_has_lag_and_events_per_topic(
    prometheus: Component, gateway: str, indexer_service: Component, sessions_service: Component,
    publisher: Publisher,
) -> None:
    await drive_traffic(gateway, publisher)
    # History needs samples: the lag reporters measure every 15 s, a rate two samples.
    deadline = time.monotonic() + 240
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as client:
        while True:
            response = await client.get("/v1/admin/metrics/history", params={"window": "15m"},
                                        headers={"Authorization": f"Bearer {OPERATOR_KEY}"})
            assert response.status_code == 200, response.text
            history: dict[str, Any] = response.json()
            assert history["available"] and history["window"] == "15m" and history["step_s"] >= 1, history
            lag_topics = {s["labels"]["topic"] for s in history["series"]["lag"]}
            events = {s["labels"]["topic"]: s["points"] for s in history["series"]["events_per_s"]}
            if ("content-upserted" in lag_topics and events.get("content-upserted")
                    and history["series"]["searches_per_s"]):
                break
            assert time.monotonic() < deadline, {k: len(v) for k, v in history["series"].items()}
            await asyncio.sleep(5)
    assert all(len(p) == 2 for p in events["content-upserted"])
