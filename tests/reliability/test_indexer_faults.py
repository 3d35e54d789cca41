"""The indexer loses nothing and duplicates nothing through crashes, outages and bad input.

Each test asserts on PostgreSQL: every valid item present once, with exactly its chunks.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import time
import uuid
from collections.abc import Awaitable, Callable

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from core.adapters.pgvector import PgVectorStore
from core.config import Settings
from core.kafka_auth import kafka_client_options
from infra.process import Component, pid_alive
from producers.publisher import Publisher
from tests.integration.kafka_helpers import end_offsets, read_from

pytestmark = pytest.mark.reliability


def tenant() -> str:
    return f"rel-{uuid.uuid4().hex[:8]}"


def doc(who: str, i: int) -> dict[str, object]:
    return {"id": f"d{i}", "text": f"Document {i} about topic {i % 97} in a short sentence.",
            "version": 1, "tenant": who}


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if await check():
                return
        except psycopg.Error:
            pass  # PostgreSQL restarting
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.5)


def integrity(settings: Settings, who: str) -> tuple[int, int, int]:
    """(items, chunk rows in the active version, distinct items among the chunks)."""
    with psycopg.connect(settings.postgres_dsn) as conn:
        # The tenant's lineage, else new tenants' (core.adapters.pgvector.versions).
        active = conn.execute("SELECT version FROM tenant_active WHERE tenant IN (%s, '*') "
                              "ORDER BY tenant = %s DESC LIMIT 1", (who, who)).fetchone()
        assert active is not None, "no active model version"
        version = active[0]
        items = conn.execute("SELECT count(*) FROM items WHERE tenant = %s", (who,)).fetchone()
        chunks = conn.execute(
            f"SELECT count(*), count(DISTINCT item_id) FROM chunks_v{int(version)} WHERE tenant = %s",
            (who,)).fetchone()
    assert items is not None and chunks is not None
    return items[0], chunks[0], chunks[1]


async def all_indexed(store: PgVectorStore, who: str, count: int, timeout_s: float = 300) -> None:
    async def done() -> bool:
        return await store.count_items(who) >= count
    await until(done, timeout_s, f"{count} items of {who}")


async def test_kill_9_the_indexer_five_times_while_5000_events_flow(
    indexer_service: Component, publisher: Publisher, store: PgVectorStore, test_settings: Settings
) -> None:
    who, total = tenant(), 5000
    rng = random.Random(7)

    async def publish() -> None:
        for start in range(0, total, 250):
            await publisher.publish_many("content-upserted", [doc(who, i) for i in range(start, start + 250)])
            await asyncio.sleep(0.2)

    publishing = asyncio.create_task(publish())
    for _ in range(5):
        await asyncio.sleep(rng.uniform(1.0, 4.0))
        pid = indexer_service.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        while pid_alive(pid):
            await asyncio.sleep(0.05)
        os.waitpid(pid, 0)  # the indexer is this test process's child: reap it
        await asyncio.to_thread(indexer_service.start)
    await publishing
    await all_indexed(store, who, total)
    await asyncio.sleep(2)  # anything redelivered after the last kill has landed by now
    assert integrity(test_settings, who) == (total, total, total)


async def test_broker_database_and_triton_outages_mid_stream(
    kafka: Component, postgres: Component, triton: Component, indexer_service: Component,
    publisher: Publisher, store: PgVectorStore, test_settings: Settings,
) -> None:
    who, total = tenant(), 600
    await publisher.publish_many("content-upserted", [doc(who, i) for i in range(0, 200)])
    await asyncio.to_thread(kafka.stop)
    await asyncio.to_thread(kafka.start)
    await publisher.publish_many("content-upserted", [doc(who, i) for i in range(200, 400)])

    await asyncio.to_thread(postgres.stop)
    await asyncio.sleep(10)
    await asyncio.to_thread(postgres.start)
    await publisher.publish_many("content-upserted", [doc(who, i) for i in range(400, 500)])

    await asyncio.to_thread(triton.stop)
    await publisher.publish_many("content-upserted", [doc(who, i) for i in range(500, total)])
    await asyncio.sleep(3)
    await asyncio.to_thread(triton.start)

    await all_indexed(store, who, total)
    assert integrity(test_settings, who) == (total, total, total)


MALFORMED = [
    b"{not json",
    json.dumps({"id": "m", "text": "", "version": 1}).encode(),
    json.dumps({"id": "m", "text": "t", "version": 0}).encode(),
    json.dumps({"id": "m", "text": "t", "version": 1, "surprise": True}).encode(),
    json.dumps({"id": "m", "text": "t", "version": 1, "schema_version": "9.0"}).encode(),
    json.dumps({"id": "m", "text": "nul \u0000 inside", "version": 1}).encode(),
    json.dumps({"id": "m", "text": "t", "version": 1, "vector": [1.0, 2.0]}).encode(),
    json.dumps([1, 2, 3]).encode(),
]


async def test_malformed_events_go_to_the_dlq_with_reasons_and_valid_ones_are_indexed(
    indexer_service: Component, publisher: Publisher, store: PgVectorStore, test_settings: Settings
) -> None:
    who = tenant()
    producer = publisher._producer
    assert producer is not None
    bad_keys = set()
    futures = []
    for i in range(1000):
        key = f"{who}/bad-{i}"
        bad_keys.add(key)
        bad = MALFORMED[i % len(MALFORMED)]
        futures.append(await producer.send("content-upserted", bad, key=key.encode()))
        futures.append(await producer.send(
            "content-upserted", json.dumps(doc(who, i)).encode(), key=f"{who}/d{i}".encode()))
    await asyncio.gather(*futures)
    await all_indexed(store, who, 1000)

    reasons: dict[str, str] = {}
    consumer = AIOKafkaConsumer("content-upserted.dlq", **kafka_client_options(),
                                bootstrap_servers=test_settings.bootstrap_servers,
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        deadline = time.monotonic() + 120
        while len(reasons) < len(bad_keys) and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=1000, max_records=2000)).values():
                for record in records:
                    key = (record.key or b"").decode()
                    if key in bad_keys:
                        reasons[key] = dict(record.headers)["dlq-error"].decode()
    finally:
        await consumer.stop()
    assert set(reasons) == bad_keys
    assert all(reason.startswith("invalid content-upserted event") for reason in reasons.values())
    assert integrity(test_settings, who) == (1000, 1000, 1000)


async def test_one_poison_message_does_not_hold_up_its_partition(
    indexer_service: Component, publisher: Publisher, store: PgVectorStore, test_settings: Settings
) -> None:
    """A record that passes validation but that PostgreSQL cannot store (a lone UTF-16
    surrogate in its metadata, which jsonb refuses) is parked in the DLQ; the records after it
    are indexed."""
    who = tenant()
    producer = publisher._producer
    assert producer is not None
    poison = json.dumps({"id": "poison", "text": "cannot be stored", "version": 1, "tenant": who,
                         "metadata": {"note": "\ud800"}}).encode()
    await producer.send_and_wait("content-upserted", poison, key=f"{who}/poison".encode(), partition=0)
    for i in range(50):
        await producer.send_and_wait("content-upserted", json.dumps(doc(who, i)).encode(),
                                     key=f"{who}/d{i}".encode(), partition=0)
    await all_indexed(store, who, 50, timeout_s=120)
    consumer = AIOKafkaConsumer("content-upserted.dlq", **kafka_client_options(),
                                bootstrap_servers=test_settings.bootstrap_servers,
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    found = None
    try:
        deadline = time.monotonic() + 60
        while found is None and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    if record.key == f"{who}/poison".encode():
                        found = {k: v.decode() for k, v in record.headers}
    finally:
        await consumer.stop()
    assert found is not None, "the poison record is not in the DLQ"
    assert "surrogate" in found["dlq-error"], found["dlq-error"]
    assert integrity(test_settings, who) == (50, 50, 50)


async def committed_offsets(settings: Settings) -> dict[int, int]:
    """The indexer group's committed offset per partition of content-upserted."""
    admin = AIOKafkaAdminClient(**kafka_client_options(), bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(settings.indexer_group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items()
            if tp.topic == "content-upserted" and meta.offset >= 0}


async def test_sigterm_finishes_the_batch_in_hand_commits_it_and_exits(
    indexer_service: Component, publisher: Publisher, store: PgVectorStore, test_settings: Settings
) -> None:
    who, total = tenant(), 400
    log = test_settings.logs_dir / "indexer.log"
    start = await end_offsets(test_settings.bootstrap_servers, "content-upserted")
    mark = len(log.read_text())
    await publisher.publish_many("content-upserted", [doc(who, i) for i in range(total)])
    deadline = time.monotonic() + 60
    while "Received" not in log.read_text()[mark:]:
        assert time.monotonic() < deadline, "the indexer took no batch"
        await asyncio.sleep(0.05)
    pid = indexer_service.pid()
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    _, status = await asyncio.to_thread(os.waitpid, pid, 0)
    # uvicorn re-raises the signal once its graceful shutdown is done.
    assert os.waitstatus_to_exitcode(status) in (0, -signal.SIGTERM)
    after_signal = log.read_text()[mark:]
    assert "Application shutdown complete" in after_signal
    # The batch in hand ran to its end (dependencies close only after the broker stopped) ...
    assert re.search(r"batch of \d+: \d+ upserted", after_signal), after_signal[-2000:]
    assert "will be retried" not in after_signal and "Traceback" not in after_signal
    # ... and was committed: exactly the records of the items written lie behind the committed
    # offsets, so after the restart nothing is consumed twice and nothing is skipped.
    committed = await committed_offsets(test_settings)
    ours = [r for r in await read_from(test_settings.bootstrap_servers, "content-upserted", start)
            if r.key is not None and r.key.decode().startswith(f"{who}/")]
    assert len(ours) == total
    behind = sum(1 for r in ours if r.offset < committed.get(r.partition, 0))
    assert behind == await store.count_items(who)

    await asyncio.to_thread(indexer_service.start)
    await all_indexed(store, who, total)
    assert integrity(test_settings, who) == (total, total, total)
