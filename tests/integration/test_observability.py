"""Metrics of a consumer service, and one trace from the gateway through Kafka into it."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from core.api_keys import hash_key
from core.config import Settings
from infra.process import Component
from infra.services import consumer_service, gateway_service
from producers.publisher import Publisher
from tests.conftest import _run

pytestmark = pytest.mark.integration


def metric(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name)]


async def test_indexer_metrics(indexer_service: Component, publisher: Publisher) -> None:
    tenant = f"m-{uuid.uuid4().hex[:8]}"
    await publisher.publish("content-upserted", {"id": "m1", "text": "metrics please", "version": 1,
                                                 "tenant": tenant})
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(base_url=indexer_service.url) as client:
        while True:
            text = (await client.get("/metrics")).text
            wanted = ("flywheel_consumer_lag{", "flywheel_embedding_seconds_count",
                      "flywheel_db_write_seconds_count", "flywheel_batch_records_count")
            missing = [name for name in wanted if not metric(text, name)]
            if not missing:
                break
            assert time.monotonic() < deadline, f"never exposed: {missing}"
            await asyncio.sleep(1)
    received = metric(text, "faststream_received_messages_total")
    assert any("content-upserted" in line for line in received), received


@pytest.fixture(scope="module")
def traced_stack(
    test_settings: Settings, kafka: Component, postgres: Component, mongodb: Component, triton: Component,
) -> Iterator[tuple[str, str]]:
    """A gateway and an indexer (in a consumer group of its own) that print their spans."""
    key = f"trace-{uuid.uuid4().hex}"
    settings = test_settings.model_copy(update={
        "api_keys_json": json.dumps([{"key_id": "t", "key_sha256": hash_key(key), "tenant": "traced",
                                      "scopes": ["publish", "search", "admin"]}]),
        "gateway_port": test_settings.gateway_port + 1,
        "services_base_port": test_settings.services_base_port + 7,
        "indexer_group": "indexer-traced",
    })
    # Spans go to stdout (the service's log file): unbuffered, so the test sees them at once.
    console = {"OTEL_TRACES_EXPORTER": "console", "PYTHONUNBUFFERED": "1"}
    gateway = gateway_service(settings, extra_env=console)
    indexer = consumer_service(settings, "indexer", 0, extra_env=console)
    gateway.name, indexer.name = "gateway-traced", "indexer-traced"
    with_indexer = _run(indexer)
    next(with_indexer)
    try:
        for _ in _run(gateway):
            yield settings.gateway_url, key
    finally:
        with_indexer.close()


async def test_one_trace_from_gateway_through_kafka_into_the_indexer(
    traced_stack: tuple[str, str], test_settings: Settings
) -> None:
    url, key = traced_stack
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
        response = await client.post("/v1/content", json={"id": "t1", "text": "follow me", "version": 1})
        assert response.status_code == 202
    gateway_log = test_settings.logs_dir / "gateway-traced.log"
    indexer_log = test_settings.logs_dir / "indexer-traced.log"
    # The traced indexer's group starts at the topic's beginning: earlier tests' events first.
    deadline = time.monotonic() + 180
    while True:
        gateway_traces = set(_trace_ids(gateway_log.read_text(), "POST /v1/content"))
        indexer_spans = indexer_log.read_text()
        if gateway_traces and any(t in indexer_spans for t in gateway_traces):
            break
        assert time.monotonic() < deadline, "the indexer's spans do not continue the gateway's trace"
        await asyncio.sleep(1)


def _trace_ids(log: str, span_name: str) -> list[str]:
    """trace ids of the console exporter's spans called `span_name` (pretty-printed JSON)."""
    ids = []
    for block in log.split('"name": ')[1:]:
        if block.startswith(f'"{span_name}'):
            marker = block.find('"trace_id": "')
            if marker >= 0:
                ids.append(block[marker + 13 : marker + 13 + 34].strip('"'))
    return ids
