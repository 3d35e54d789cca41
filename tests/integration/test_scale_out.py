"""Scale-out on the real broker: `flywheel up --scale indexer=3` runs three indexer processes in
one consumer group; Kafka divides content-upserted's partitions among them, and when one is
killed with SIGKILL mid-stream its partitions move to the other two, with every item written
exactly once (item count and chunk rows equal the published set)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

from core.adapters.pgvector import PgVectorStore
from core.config import REPO_ROOT, Settings
from core.kafka_auth import kafka_client_options
from infra import stack
from infra.process import Component, pid_alive
from producers.publisher import Publisher
from schemas.topics import CONTENT_UPSERTED
from tests.helpers import share_kafka_credentials
from tests.integration.kafka_helpers import end_offsets
from tests.reliability.test_indexer_faults import all_indexed, doc, integrity

pytestmark = pytest.mark.integration

TOPIC = CONTENT_UPSERTED.name
REPLICAS = ("indexer", "indexer-2", "indexer-3")


@pytest_asyncio.fixture()
async def scaled(
    kafka: Component, postgres: Component, triton: Component, test_settings: Settings,
) -> AsyncIterator[Settings]:
    """A stack of its own (state, service ports, consumer group) over the test stack's Kafka,
    PostgreSQL and Triton. The supervisor waits long before a restart, so the test sees the
    partitions of a killed process move to the survivors, not back to its replacement."""
    settings = test_settings.model_copy(update={
        "state_dir": test_settings.state_dir / "scaled",
        "services_base_port": test_settings.kafka_port + 60,
        "indexer_group": f"indexer-scale-{uuid.uuid4().hex[:6]}",
        "supervisor_backoff_s": 300.0,
        "supervisor_max_backoff_s": 300.0,
    })
    share_kafka_credentials(test_settings, settings)
    # The new group starts at the topic's end: nothing published before this test is re-indexed.
    await start_group_at_end(settings)
    yield settings
    await asyncio.to_thread(stack.down, settings)


async def start_group_at_end(settings: Settings) -> None:
    ends = await end_offsets(settings.bootstrap_servers, TOPIC)
    committer = AIOKafkaConsumer(
        **kafka_client_options(), bootstrap_servers=settings.bootstrap_servers,
        group_id=settings.indexer_group,
        enable_auto_commit=False)
    await committer.start()
    try:
        committer.assign([TopicPartition(TOPIC, p) for p in ends])
        await committer.commit({TopicPartition(TOPIC, p): offset for p, offset in ends.items()})
    finally:
        await committer.stop()


def flywheel(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=REPO_ROOT,
                          env={**os.environ, **settings.to_env()}, capture_output=True, text=True,
                          timeout=600)


async def status_rows(settings: Settings) -> dict[str, dict[str, Any]]:
    listed = await asyncio.to_thread(flywheel, settings, "status", "--json")
    return {row["name"]: row for row in json.loads(listed.stdout)}


async def assignment(settings: Settings) -> dict[str, set[int]]:
    """member id -> the partitions of content-upserted it holds, as the group coordinator says
    (empty while the group rebalances)."""
    admin = AIOKafkaAdminClient(**kafka_client_options(), bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        responses = await admin.describe_consumer_groups([settings.indexer_group])
    finally:
        await admin.close()
    members: dict[str, set[int]] = {}
    for response in responses:
        for error_code, _group, state, _ptype, _protocol, group_members, *_ in response.groups:
            assert error_code == 0
            if state != "Stable":
                return {}
            for member_id, _client, _host, _metadata, raw in group_members:
                decoded = ConsumerProtocolMemberAssignment.decode(raw)
                members[member_id] = {tp.partition for tp in decoded.partitions() if tp.topic == TOPIC}
    return members


def member_of(settings: Settings, name: str) -> str | None:
    """The group member id a process last reported in its own log."""
    log = (settings.logs_dir / f"{name}.log").read_text(errors="replace")
    found = re.findall(r"Consumer (\S+) assigned to partitions", log)
    return found[-1] if found else None


async def wait_assignment(settings: Settings, members: int, timeout_s: float) -> dict[str, set[int]]:
    deadline = time.monotonic() + timeout_s
    seen: dict[str, set[int]] = {}
    while time.monotonic() < deadline:
        seen = await assignment(settings)
        if len(seen) == members and set().union(*seen.values()) == set(range(CONTENT_UPSERTED.partitions)):
            return seen
        await asyncio.sleep(0.5)
    raise AssertionError(f"no stable assignment over {members} members: {seen}")


async def test_three_indexers_share_the_partitions_and_survive_a_kill(
    scaled: Settings, publisher: Publisher, store: PgVectorStore,
) -> None:
    settings = scaled
    up = await asyncio.to_thread(flywheel, settings, "up", "--scale", "indexer=3", "indexer")
    assert up.returncode == 0, up.stderr[-3000:]
    for name in REPLICAS:
        assert f"ready {name}" in up.stderr
    rows = await status_rows(settings)
    pids = {name: rows[name]["pid"] for name in REPLICAS}
    assert all(rows[name]["healthy"] for name in REPLICAS) and len(set(pids.values())) == 3
    assert len({rows[name]["url"] for name in REPLICAS}) == 3

    # Three members, two partitions each, every partition held.
    before = await wait_assignment(settings, 3, timeout_s=60)
    assert sorted(len(p) for p in before.values()) == [2, 2, 2]
    deadline = time.monotonic() + 15
    members = {name: member_of(settings, name) for name in REPLICAS}
    while set(members.values()) != set(before):  # each process logs the assignment it got
        assert time.monotonic() < deadline, f"processes' logs {members} against the group {before}"
        await asyncio.sleep(0.3)
        members = {name: member_of(settings, name) for name in REPLICAS}

    who, total = f"scale-{uuid.uuid4().hex[:8]}", 300
    await publisher.publish_many(TOPIC, [doc(who, i) for i in range(0, 100)])
    victim = "indexer-2"
    deadline = time.monotonic() + 60
    while await store.count_items(who) == 0:  # mid-stream: the group is indexing
        assert time.monotonic() < deadline, "nothing indexed"
        await asyncio.sleep(0.2)
    os.kill(pids[victim], signal.SIGKILL)
    publishing = asyncio.create_task(publisher.publish_many(TOPIC, [doc(who, i) for i in range(100, total)]))
    while pid_alive(pids[victim]):
        await asyncio.sleep(0.05)

    # After the session timeout the coordinator drops the dead member; its partitions go to the
    # two survivors, who now hold all six.
    after = await wait_assignment(settings, 2, timeout_s=60)
    survivors = {members[name] for name in REPLICAS if name != victim}
    assert set(after) == survivors
    assert before[str(members[victim])] <= set().union(*after.values())
    await publishing

    await all_indexed(store, who, total, timeout_s=180)
    await asyncio.sleep(2)  # anything redelivered after the kill has landed by now
    assert integrity(settings, who) == (total, total, total)

    rows = await status_rows(settings)
    assert set(REPLICAS) <= set(rows) and rows[victim]["pid"] is None

    down = await asyncio.to_thread(flywheel, settings, "down")
    assert down.returncode == 0, down.stderr[-3000:]
    assert not any(pid_alive(pid) for pid in pids.values())
    assert not list(settings.run_dir.glob("*.pid")) and not stack.scale_file(settings).exists()
