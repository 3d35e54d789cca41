"""A tenant admin's /v1/admin/* against real Kafka and PostgreSQL: its own dead letters and
item counts only, redrives only its own letters; what spans tenants needs an operator key.
Another tenant's key and lower scopes are refused, and nothing of the other tenant changes."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from core.adapters.kafka_admin import connect_kafka
from core.config import Settings
from core.kafka_auth import kafka_client_options
from infra.process import Component
from producers.publisher import Publisher
from tests.conftest import gateway_with_keys

pytestmark = pytest.mark.integration

TA, TB = f"ta-{uuid.uuid4().hex[:8]}", f"tb-{uuid.uuid4().hex[:8]}"
KEYS = {
    "admin-a": (TA, ["admin"]), "publish-a": (TA, ["publish", "search"]),
    "admin-b": (TB, ["admin"]), "operator": ("platform", ["operator"]),
}
SECRET = {name: f"key-{name}-{uuid.uuid4().hex}" for name in KEYS}


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRET[name]}"}


@pytest.fixture(scope="module")
def gateway(
    test_settings: Settings, kafka: Component, postgres: Component, mongodb: Component
) -> Iterator[str]:
    yield from gateway_with_keys(test_settings, KEYS, SECRET)


def click(tenant: str) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "type": "click", "schema_version": "1.0",
            "occurred_at": "2026-01-01T00:00:00Z", "tenant": tenant, "source": "tests",
            "session_id": f"s-{uuid.uuid4().hex[:6]}", "content_id": "doc", "rank": 1}


async def park(publisher: Publisher, event: dict[str, Any]) -> tuple[int, int]:
    """A click as the sessions service would have parked it on clicks.dlq."""
    producer = publisher._producer
    assert producer is not None
    sent = await producer.send_and_wait(
        "clicks.dlq", json.dumps(event).encode(), key=event["session_id"].encode(),
        headers=[("dlq-error", b"MongoDB was down"), ("dlq-original-topic", b"clicks"),
                 ("dlq-original-partition", b"0"), ("dlq-original-offset", b"1")])
    return sent.partition, sent.offset


async def clicks_since(bootstrap: str, starts: dict[int, int]) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(**kafka_client_options(), bootstrap_servers=bootstrap,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition("clicks", p) for p in starts]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            consumer.seek(tp, starts[tp.partition])
        found: list[dict[str, Any]] = []
        remaining = [tp for tp in partitions if starts[tp.partition] < ends[tp]]
        while remaining:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    with contextlib.suppress(ValueError):  # other tests' malformed letters, redriven too
                        found.append(json.loads(record.value or b""))
            remaining = [tp for tp in remaining if await consumer.position(tp) < ends[tp]]
        return found
    finally:
        await consumer.stop()


async def clicks_ends(bootstrap: str) -> dict[int, int]:
    async with connect_kafka(bootstrap) as kafka:
        return await kafka.end_offsets("clicks", await kafka.partitions("clicks"))


def letters_of(listing: list[dict[str, Any]], topic: str = "clicks.dlq") -> dict[str, Any]:
    return next(t for t in listing if t["topic"] == topic)


async def test_a_tenant_admin_sees_and_redrives_only_its_own_letters(
    gateway: str, publisher: Publisher, test_settings: Settings
) -> None:
    bootstrap = test_settings.bootstrap_servers
    a_event, b_event = click(TA), click(TB)
    a_at, b_at = await park(publisher, a_event), await park(publisher, b_event)
    before = await clicks_ends(bootstrap)
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as client:
        mine = letters_of((await client.get("/v1/admin/dlq?letters=200", headers=auth("admin-a"))).json())
        assert (mine["total"], mine["pending"]) == (1, 1)
        assert [(x["partition"], x["offset"]) for x in mine["letters"]] == [a_at]
        every = letters_of((await client.get("/v1/admin/dlq?letters=200", headers=auth("operator"))).json())
        assert every["total"] >= 2

        # B's letter is not A's to read or to redrive; lower scopes are refused outright.
        assert (await client.get(f"/v1/admin/dlq/clicks/{b_at[0]}/{b_at[1]}",
                                 headers=auth("admin-a"))).status_code == 404
        assert (await client.get(f"/v1/admin/dlq/clicks/{a_at[0]}/{a_at[1]}",
                                 headers=auth("admin-a"))).status_code == 200
        for path in ("/v1/admin/dlq", f"/v1/admin/dlq/clicks/{a_at[0]}/{a_at[1]}", "/v1/admin/tenants"):
            assert (await client.get(path, headers=auth("publish-a"))).status_code == 403
        assert (await client.post("/v1/admin/dlq/clicks/redrive", json={},
                                  headers=auth("publish-a"))).status_code == 403
        for path in ("/v1/admin/status", "/v1/admin/topics"):
            assert (await client.get(path, headers=auth("admin-a"))).status_code == 403

        redriven = await client.post("/v1/admin/dlq/clicks/redrive", json={}, headers=auth("admin-a"))
        assert redriven.status_code == 200 and redriven.json()["redriven"] == 1
        again = await client.post("/v1/admin/dlq/clicks/redrive", json={}, headers=auth("admin-a"))
        assert again.json()["redriven"] == 0
        theirs = letters_of((await client.get("/v1/admin/dlq", headers=auth("admin-b"))).json())
        assert (theirs["total"], theirs["pending"]) == (1, 1)  # B's letter is untouched
        mine = letters_of((await client.get("/v1/admin/dlq", headers=auth("admin-a"))).json())
        assert (mine["total"], mine["pending"]) == (1, 0)

        # The operator's redrive sends B's letter (and any other pending), never A's again.
        assert (await client.post("/v1/admin/dlq/clicks/redrive", json={},
                                  headers=auth("operator"))).status_code == 200
        theirs = letters_of((await client.get("/v1/admin/dlq", headers=auth("admin-b"))).json())
        assert theirs["pending"] == 0
    sent = [e.get("event_id") for e in await clicks_since(bootstrap, before) if isinstance(e, dict)]
    assert sent.count(a_event["event_id"]) == 1 and sent.count(b_event["event_id"]) == 1


async def test_item_counts_and_status_by_scope(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as client:
        own = (await client.get("/v1/admin/tenants", headers=auth("admin-a"))).json()
        assert own == [{"tenant": TA, "items": 0}]
        assert all(t["tenant"] == TB for t in (await client.get("/v1/admin/tenants",
                                                                 headers=auth("admin-b"))).json())
        status = await client.get("/v1/admin/status", headers=auth("operator"))
        assert status.status_code == 200 and {c["name"] for c in status.json()} >= {"kafka", "postgres"}
        topics = await client.get("/v1/admin/topics", headers=auth("operator"))
        assert topics.status_code == 200
