"""The consumer skeleton's wiring and error policy, through FastStream's TestKafkaBroker."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from faststream.kafka import TestKafkaBroker
from faststream.kafka.message import KafkaAckableMessage

from consumers.error_policy import Attempts, ErrorPolicy, is_dependency_error
from consumers.service import ConsumerService, ServiceContext, raw_message
from core.config import Settings
from core.ports import DependencyUnavailable
from schemas.topics import CLICKS, TRAINING_REQUESTED
from schemas.training import TrainingRequested

POLICY = ErrorPolicy(max_attempts=3, backoff_s=0.0, max_backoff_s=0.0)


@pytest.fixture
def outcomes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """'ack' (offsets committed) or 'nack' (rewound) for each message our subscribers settle."""
    seen: list[str] = []
    ack, nack = KafkaAckableMessage.ack, KafkaAckableMessage.nack

    async def record_ack(self: KafkaAckableMessage) -> None:
        seen.append("ack")
        await ack(self)

    async def record_nack(self: KafkaAckableMessage) -> None:
        seen.append("nack")
        await nack(self)

    monkeypatch.setattr(KafkaAckableMessage, "ack", record_ack)
    monkeypatch.setattr(KafkaAckableMessage, "nack", record_nack)
    return seen


def training_request(run_id: str = "run-1") -> bytes:
    return json.dumps({"run_id": run_id}).encode()


class Letters:
    """Everything parked on a dead-letter topic, as (key, value, headers)."""

    def __init__(self, service: ConsumerService[Any], topic: str) -> None:
        self.seen: list[tuple[bytes, bytes, dict[str, str]]] = []

        @service.broker.subscriber(f"{topic}.dlq", group_id="spy", decoder=raw_message)
        async def spy(raw: Any) -> None:
            self.seen.append((raw.key, raw.value, {k: v.decode() for k, v in raw.headers}))


async def open_nothing(ctx: ServiceContext) -> dict[str, int]:
    return {"opened": 1}


def single_service(handle: Any) -> tuple[ConsumerService[Any], Letters]:
    service: ConsumerService[Any] = ConsumerService("test", open_nothing, settings=Settings(), policy=POLICY)
    letters = Letters(service, TRAINING_REQUESTED.name)
    service.consume(TRAINING_REQUESTED, TrainingRequested, handle, group_id="test")
    return service, letters


async def test_an_undecodable_record_is_parked_with_the_reason_and_the_handler_never_runs() -> None:
    handled: list[TrainingRequested] = []

    async def handle(event: TrainingRequested, resources: Any) -> None:
        handled.append(event)

    service, letters = single_service(handle)
    async with TestKafkaBroker(service.broker) as broker:
        await service.open()
        await broker.publish(b"{not json", topic=TRAINING_REQUESTED.name, key=b"k1")
        await broker.publish(training_request("good"), topic=TRAINING_REQUESTED.name, key=b"good")
    assert [e.run_id for e in handled] == ["good"]
    [(key, value, headers)] = letters.seen
    assert (key, value) == (b"k1", b"{not json")
    assert "JSON" in headers["dlq-error"] or "json" in headers["dlq-error"]
    assert headers["dlq-original-topic"] == TRAINING_REQUESTED.name
    assert headers["dlq-attempts"] == "1"


async def test_a_transient_error_is_retried_and_nothing_is_parked(outcomes: list[str]) -> None:
    calls: list[str] = []

    async def handle(event: TrainingRequested, resources: Any) -> None:
        calls.append(event.run_id)
        if len(calls) == 1:
            raise DependencyUnavailable("MLflow is down")

    service, letters = single_service(handle)
    async with TestKafkaBroker(service.broker) as broker:
        await service.open()
        # The test broker does not redeliver: the same record (same position) is sent again.
        await broker.publish(training_request(), topic=TRAINING_REQUESTED.name, key=b"run-1")
        assert len(service.attempts) == 1  # nacked, counted, not parked
        await broker.publish(training_request(), topic=TRAINING_REQUESTED.name, key=b"run-1")
    assert calls == ["run-1", "run-1"]
    assert outcomes == ["nack", "ack"]
    assert letters.seen == []
    assert len(service.attempts) == 0  # a success forgets the failures


async def test_an_error_past_the_attempts_cap_is_parked_with_the_count() -> None:
    async def handle(event: TrainingRequested, resources: Any) -> None:
        raise DependencyUnavailable("MLflow is down")

    service, letters = single_service(handle)
    async with TestKafkaBroker(service.broker) as broker:
        await service.open()
        for _ in range(POLICY.max_attempts):
            await broker.publish(training_request(), topic=TRAINING_REQUESTED.name, key=b"run-1")
    [(key, _, headers)] = letters.seen
    assert key == b"run-1"
    assert headers["dlq-attempts"] == str(POLICY.max_attempts)
    gave_up = f"gave up after {POLICY.max_attempts} attempts: DependencyUnavailable"
    assert headers["dlq-error"].startswith(gave_up)


async def test_a_permanent_error_is_parked_at_once() -> None:
    async def handle(event: TrainingRequested, resources: Any) -> None:
        raise KeyError("no such field in the artifact")

    service, letters = single_service(handle)
    async with TestKafkaBroker(service.broker) as broker:
        await service.open()
        await broker.publish(training_request(), topic=TRAINING_REQUESTED.name, key=b"run-1")
    [(_, _, headers)] = letters.seen
    assert headers["dlq-attempts"] == "1"
    assert headers["dlq-error-type"] == "KeyError"


def click(session: str, item: str) -> bytes:
    return json.dumps({"type": "click", "session_id": session, "item_id": item, "rank": 1}).encode()


def batch_service(handle: Any) -> tuple[ConsumerService[Any], Letters]:
    service: ConsumerService[Any] = ConsumerService("test", open_nothing, settings=Settings(), policy=POLICY)
    letters = Letters(service, CLICKS.name)

    def parse(record: Any) -> dict[str, Any]:
        value = json.loads(record.value)
        if "item_id" not in value:
            raise ValueError("item_id is missing")
        return value

    service.consume_batch(CLICKS, parse, handle, group_id="test", max_records=10, batch_timeout_ms=10)
    return service, letters


async def test_a_good_batch_is_handled_whole_and_acknowledged(outcomes: list[str]) -> None:
    handled: list[str] = []

    async def handle(part: Sequence[tuple[Any, dict[str, Any]]], resources: Any) -> list[tuple[Any, str]]:
        handled.extend(value["item_id"] for _, value in part)
        return []

    service, letters = batch_service(handle)
    async with TestKafkaBroker(service.broker) as broker:
        await service.open()
        await broker.publish_batch(click("s", "a"), click("s", "b"), topic=CLICKS.name)
    assert handled == ["a", "b"]
    assert outcomes == ["ack"]
    assert letters.seen == [] and len(service.attempts) == 0


async def test_a_poison_record_in_a_batch_is_parked_and_the_rest_handled_in_order() -> None:
    handled: list[str] = []

    async def handle(part: Sequence[tuple[Any, dict[str, Any]]], resources: Any) -> list[tuple[Any, str]]:
        if any(value["item_id"] == "poison" for _, value in part):
            raise OverflowError("MongoDB can only handle up to 8-byte ints")
        handled.extend(value["item_id"] for _, value in part)
        return [(record, "rejected by the handler") for record, value in part if value["item_id"] == "odd"]

    service, letters = batch_service(handle)
    async with TestKafkaBroker(service.broker) as broker:
        await service.open()
        await broker.publish_batch(
            click("s", "a"), b'{"type": "click"}', click("s", "poison"), click("s", "odd"), click("s", "b"),
            topic=CLICKS.name,
        )
    assert handled == ["a", "odd", "b"]
    reasons = sorted(headers["dlq-error"] for _, _, headers in letters.seen)
    assert reasons == ["OverflowError: MongoDB can only handle up to 8-byte ints", "item_id is missing",
                       "rejected by the handler"]


async def test_a_batch_failing_transiently_past_the_cap_is_parked_whole(outcomes: list[str]) -> None:
    async def handle(part: Sequence[tuple[Any, dict[str, Any]]], resources: Any) -> list[tuple[Any, str]]:
        raise ConnectionError("MongoDB is down")

    service, letters = batch_service(handle)
    async with TestKafkaBroker(service.broker) as broker:
        await service.open()
        for attempt in range(1, POLICY.max_attempts + 1):
            await broker.publish_batch(click("s", "a"), click("s", "b"), topic=CLICKS.name)
            assert len(letters.seen) == (0 if attempt < POLICY.max_attempts else 2)
    assert {headers["dlq-attempts"] for _, _, headers in letters.seen} == {str(POLICY.max_attempts)}
    assert outcomes == ["nack"] * (POLICY.max_attempts - 1) + ["ack"]


def test_what_counts_as_transient() -> None:
    from pymongo.errors import AutoReconnect, DocumentTooLarge
    from tritonclient.utils import InferenceServerException

    assert is_dependency_error(AutoReconnect("primary stepped down"))
    assert is_dependency_error(DependencyUnavailable("MLflow"))
    assert not is_dependency_error(DocumentTooLarge("16 MiB"))
    assert not is_dependency_error(ValueError("bad input"))
    too_big = InferenceServerException("inference request batch-size must be <= 64",
                                       status="StatusCode.INVALID_ARGUMENT")
    assert not is_dependency_error(too_big)
    loading = InferenceServerException("Request for unknown model: 'embedder' version 3 is not found",
                                       status="StatusCode.NOT_FOUND")
    assert is_dependency_error(loading)


def test_backoff_doubles_up_to_the_maximum_and_attempts_are_bounded() -> None:
    policy = ErrorPolicy(max_attempts=5, backoff_s=1.0, max_backoff_s=5.0)
    assert [policy.backoff(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    with pytest.raises(ValueError, match="max_attempts"):
        ErrorPolicy(max_attempts=0)
    attempts = Attempts(limit=2)
    for offset in range(3):
        attempts.failed(("t", 0, offset))
    assert len(attempts) == 2 and attempts.failed(("t", 0, 2)) == 2


async def test_a_handler_without_progress_is_cancelled_its_task_failed_and_its_record_parked() -> None:
    import asyncio

    from consumers.service import BeatingTasks

    class Tasks:
        def __init__(self) -> None:
            self.updates: list[dict[str, Any]] = []

        async def update(self, task_id: str, **fields: Any) -> dict[str, Any]:
            self.updates.append({"task_id": task_id, **fields})
            return fields

    tasks = Tasks()
    stalled: list[str] = []
    cancelled: list[str] = []

    async def open_tasks(ctx: ServiceContext) -> BeatingTasks:
        return BeatingTasks(tasks, ctx.heartbeat)

    async def handle(event: TrainingRequested, resources: BeatingTasks) -> None:
        for step in range(3):  # progress, each within the timeout ...
            await resources.update(event.run_id, progress=step / 3)
            await asyncio.sleep(0.1)
        try:
            await asyncio.sleep(30)  # ... then it hangs
        except asyncio.CancelledError:
            cancelled.append(event.run_id)
            raise

    async def on_stall(event: TrainingRequested, resources: BeatingTasks, reason: str) -> None:
        stalled.append(reason)
        await resources.update(event.run_id, status="failed", error=reason)

    service: ConsumerService[Any] = ConsumerService("test", open_tasks, settings=Settings(), policy=POLICY)
    letters = Letters(service, TRAINING_REQUESTED.name)
    service.consume(TRAINING_REQUESTED, TrainingRequested, handle, group_id="test",
                    stall_timeout_s=0.5, on_stall=on_stall)
    async with TestKafkaBroker(service.broker) as broker:
        await service.open()
        await broker.publish(training_request("hung"), topic=TRAINING_REQUESTED.name, key=b"hung")
    assert cancelled == ["hung"]
    assert stalled == ["no progress for 0.5 s (stall timeout)"]
    assert [u.get("progress") for u in tasks.updates[:3]] == [0.0, 1 / 3, 2 / 3]  # beats kept it alive
    assert tasks.updates[-1]["status"] == "failed"
    [(key, _, headers)] = letters.seen
    assert key == b"hung" and headers["dlq-error"].startswith("no progress for")
