"""The one skeleton of every consumer service.

A service is a FastStream Kafka broker with telemetry, served over ASGI (GET /health and
GET /metrics, so the local runtime, compose and Kubernetes probe every service alike), plus:

- typed resources, opened once before the broker starts and closed after it has stopped (so
  the batch in hand at SIGTERM finishes with its connections still open);
- one way to publish from a service (:class:`ServicePublisher`), dead letters included;
- one error policy (consumers.error_policy) around every handler: undecodable records and
  permanent errors are parked on `<topic>.dlq` with the reason and attempt count, transient
  errors rewind the record or batch after a backoff, and nothing is retried past the cap.

A service's app.py keeps only what is its own: the topic, the group, the handler and the few
settings it reads. Offsets are committed (acknowledged) only after the handler returned and
its dead letters were acknowledged by Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, Protocol, TypeVar

from faststream import AckPolicy
from faststream.asgi import AsgiFastStream, make_ping_asgi
from faststream.exceptions import NackMessage
from faststream.kafka import KafkaBroker
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from prometheus_client import REGISTRY, make_asgi_app

from consumers.error_policy import Attempts, ErrorPolicy, Position, parked_reason
from consumers.lag import report_lag_forever
from consumers.parking import DeadLetter, dlq_topic
from consumers.poison import process_isolating_poison
from core.config import Settings, get_settings
from core.kafka_auth import faststream_security
from core.logging import configure_logging
from core.metrics import BATCH_RECORDS, DEAD_LETTERS
from core.telemetry import configure_tracing
from schemas import codec
from schemas.envelope import Envelope
from schemas.topics import TopicSpec

SERVICES = ("indexer", "sessions", "trainer", "deployer", "reindexer", "improver", "sources")

R = TypeVar("R")
E = TypeVar("E", bound=Envelope)
T = TypeVar("T")


class Closable(Protocol):
    async def close(self) -> None: ...


C = TypeVar("C", bound=Closable)


async def raw_message(message: Any) -> Any:
    """A FastStream decoder handing handlers aiokafka's own record(s): keys, tombstones and
    offsets stay visible, and decoding is ours (schemas.codec) so bad records can be parked."""
    return message.raw_message


def position_of(record: Any) -> Position:
    return (record.topic, record.partition, record.offset)


class ServicePublisher:
    """How a service writes to Kafka: events keyed as the topic registry says, and dead letters."""

    def __init__(self, broker: KafkaBroker) -> None:
        self._broker = broker

    async def publish(self, topic: TopicSpec, event: Envelope) -> None:
        """Send `event` and wait for the broker's acknowledgement."""
        await self._broker.publish(
            codec.encode(event), topic=topic.name, key=topic.key_of(event).encode(),
            headers={"content-type": "application/json"},
        )

    async def delete(self, topic: TopicSpec, key: str) -> None:
        """A tombstone (null value) for `key`: deletes what the key names on a compacted topic."""
        await self._broker.publish(None, topic=topic.name, key=key.encode())

    async def park(self, letters: Sequence[DeadLetter]) -> None:
        """The original records, byte for byte, on their dead-letter topics, each acknowledged
        before offsets move on."""
        for letter in letters:
            record = letter.record
            DEAD_LETTERS.labels(record.topic).inc()
            await self._broker.publish(
                record.value if record.value is not None else b"",
                topic=dlq_topic(record.topic), key=record.key, headers=letter.headers(),
            )


class Stalled(RuntimeError):
    """The record in hand reported no progress for longer than its service allows."""


class Heartbeat:
    """When the record in hand last made progress; long handlers beat it (through
    :class:`BeatingTasks`, every task update counts)."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def beat(self) -> None:
        self.last = time.monotonic()

    def silent_for(self) -> float:
        return time.monotonic() - self.last


class BeatingTasks:
    """A task store whose every update is a heartbeat of the record in hand."""

    def __init__(self, tasks: Any, heartbeat: Heartbeat) -> None:
        self._tasks = tasks
        self._heartbeat = heartbeat

    async def update(self, task_id: str, **fields: Any) -> dict[str, Any] | None:
        self._heartbeat.beat()
        result: dict[str, Any] | None = await self._tasks.update(task_id, **fields)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tasks, name)


@dataclass
class ServiceContext:
    """What a service's `open_resources` gets: its settings, where to publish, and an exit
    stack that closes what it registers after the broker has stopped."""

    settings: Settings
    publisher: ServicePublisher
    stack: AsyncExitStack
    log: logging.Logger
    heartbeat: Heartbeat

    def closing(self, resource: C) -> C:
        """`resource`, to be closed (in reverse order of opening) when the service stops."""
        self.stack.push_async_callback(resource.close)
        return resource


async def watched(work: Awaitable[None], heartbeat: Heartbeat, stall_timeout_s: float | None) -> None:
    """Await `work`; cancel it and raise Stalled once `heartbeat` is silent too long."""
    heartbeat.beat()
    if stall_timeout_s is None:
        await work
        return
    task = asyncio.ensure_future(work)
    while not task.done():
        remaining = stall_timeout_s - heartbeat.silent_for()
        if remaining <= 0:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise Stalled(f"no progress for {stall_timeout_s:g} s (stall timeout)")
        await asyncio.wait({task}, timeout=remaining)
    task.result()


class ConsumerService(Generic[R]):
    def __init__(
        self,
        name: str,
        open_resources: Callable[[ServiceContext], Awaitable[R]],
        *,
        settings: Settings | None = None,
        policy: ErrorPolicy | None = None,
        **broker_options: Any,
    ) -> None:
        self.name = name
        self.settings = settings = settings or get_settings()
        configure_logging(f"flywheel-{name}")
        self.log = logging.getLogger(f"flywheel.{name}")
        self.policy = policy or ErrorPolicy(
            max_attempts=settings.consumer_max_attempts, backoff_s=settings.retry_backoff_s,
            max_backoff_s=settings.retry_max_backoff_s,
        )
        self.broker = KafkaBroker(
            settings.bootstrap_servers,
            client_id=f"flywheel-{name}",
            # This service's own principal: the broker's ACLs allow it only its topics and groups.
            security=faststream_security(settings),
            # SIGTERM: stop fetching, let the batch in hand finish and commit, then exit.
            graceful_timeout=settings.shutdown_grace_s,
            middlewares=[
                KafkaTelemetryMiddleware(tracer_provider=configure_tracing(f"flywheel-{name}")),
                # One service per process: the default registry also holds core.metrics.
                KafkaPrometheusMiddleware(registry=REGISTRY, app_name=f"flywheel-{name}"),
            ],
            **broker_options,
        )
        self.publisher = ServicePublisher(self.broker)
        self.attempts = Attempts()
        self.heartbeat = Heartbeat()
        self._open_resources = open_resources
        self._stack = AsyncExitStack()
        self._resources: R | None = None
        self._open = False
        self._lag_of: list[tuple[str, str]] = []
        self._after_startup: list[Callable[[], Awaitable[None]]] = []
        self._background: list[asyncio.Task[None]] = []

    # --- resources ---------------------------------------------------------------------
    @property
    def resources(self) -> R:
        if not self._open:
            raise RuntimeError(f"the {self.name} service's resources are not open")
        return self._resources  # type: ignore[return-value]

    async def open(self) -> None:
        context = ServiceContext(self.settings, self.publisher, self._stack, self.log, self.heartbeat)
        self._resources = await self._open_resources(context)
        self._open = True

    async def close(self) -> None:
        self._open, self._resources = False, None
        await self._stack.aclose()

    def in_background(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run `work` beside the consumer once the broker runs; cancelled when it stops."""

        async def start() -> None:
            self._background.append(asyncio.create_task(work()))

        self._after_startup.append(start)

    # --- subscribers -------------------------------------------------------------------
    def consume(
        self,
        topic: TopicSpec,
        event_type: type[E],
        handle: Callable[[E, R], Awaitable[None]],
        *,
        group_id: str,
        stall_timeout_s: float | None = None,
        on_stall: Callable[[E, R, str], Awaitable[None]] | None = None,
        **options: Any,
    ) -> Callable[[Any], Awaitable[None]]:
        """One record at a time: decode it as `event_type` (else park it), then `handle` it
        under the error policy. With `stall_timeout_s`, a handler that reports no progress
        (:attr:`heartbeat`) for that long is cancelled, `on_stall` records why (e.g. fails the
        task), and the record is parked: a hung deploy or reindex is noticed, not waited on."""

        async def on_record(record: Any) -> None:
            try:
                event = codec.decode_record(record)
                if not isinstance(event, event_type):
                    raise ValueError(f"{record.topic} does not accept "
                                     f"{'tombstones' if event is None else type(event).__name__}")
            except ValueError as error:  # EventValidationError included
                await self.publisher.park([DeadLetter(record, str(error), error)])
                return
            try:
                await self._watched(handle(event, self.resources), stall_timeout_s)
            except Stalled as stall:
                self.log.error("%s: %s; parking the record", position_of(record), stall)
                if on_stall is not None:
                    await on_stall(event, self.resources, str(stall))
                await self.publisher.park([DeadLetter(record, str(stall), stall)])
                return
            except Exception as error:
                await self._after_failure(position_of(record), error, [record])
                return
            self.attempts.clear(position_of(record))

        subscriber = self.broker.subscriber(
            topic.name, group_id=group_id, auto_offset_reset="earliest",
            ack_policy=AckPolicy.NACK_ON_ERROR, decoder=raw_message, **options,
        )
        subscriber(on_record)
        self._track_lag(group_id, topic.name)
        return on_record

    def consume_batch(
        self,
        topic: TopicSpec | str,
        parse: Callable[[Any], T],
        handle: Callable[[Sequence[tuple[Any, T]], R], Awaitable[Sequence[tuple[Any, str]]]],
        *,
        group_id: str,
        max_records: int,
        batch_timeout_ms: int,
        **options: Any,
    ) -> Callable[[Any], Awaitable[None]]:
        """Batches: `parse` each record (a ValueError parks it), then `handle` the parsed
        ones; `handle` returns the records it rejects, with the reason, to be parked. A
        permanent error is narrowed down by bisecting the batch, so only the records that
        fail alone are parked and the rest are handled in order. `topic` is a registry topic,
        or a regular expression of topic names (each needs its own `<topic>.dlq`)."""
        name = topic.name if isinstance(topic, TopicSpec) else topic

        async def on_batch(records: Any) -> None:
            records = tuple(records)
            if not records:
                return
            BATCH_RECORDS.labels(name).observe(len(records))
            parsed: list[tuple[Any, T]] = []
            letters: list[DeadLetter] = []
            for record in records:
                try:
                    parsed.append((record, parse(record)))
                except ValueError as error:
                    letters.append(DeadLetter(record, str(error), error))
            rejected: list[tuple[Any, str]] = []
            done: set[int] = set()

            async def run(part: Sequence[tuple[Any, T]]) -> None:
                rejected.extend(await handle(part, self.resources))
                done.update(id(record) for record, _ in part)

            position = position_of(records[0])
            try:
                poisoned = await process_isolating_poison(parsed, run, self.policy.is_transient)
            except Exception as error:  # only transient errors get here
                # Returns only once the attempts are used up: park what was not handled.
                await self._after_failure(
                    position, error, [record for record, _ in parsed if id(record) not in done], letters,
                )
                return
            self.attempts.clear(position)
            letters += [DeadLetter(record, reason) for record, reason in rejected]
            letters += [DeadLetter(record, f"{type(error).__name__}: {error}", error)
                        for (record, _), error in poisoned]
            await self.publisher.park(letters)
            if letters:
                self.log.warning("batch of %d: %d records parked on %s",
                                 len(records), len(letters), dlq_topic(records[0].topic))

        where: dict[str, Any] = {"pattern": name} if isinstance(topic, str) else {}
        subscriber = self.broker.subscriber(
            *(() if where else (name,)), **where, group_id=group_id, batch=True,
            max_records=max_records, batch_timeout_ms=batch_timeout_ms, auto_offset_reset="earliest",
            ack_policy=AckPolicy.NACK_ON_ERROR, decoder=raw_message, **options,
        )
        subscriber(on_batch)
        if isinstance(topic, TopicSpec):
            self._track_lag(group_id, topic.name)
        return on_batch

    async def _watched(self, work: Awaitable[None], stall_timeout_s: float | None) -> None:
        await watched(work, self.heartbeat, stall_timeout_s)

    async def _after_failure(
        self, position: Position, error: Exception, records: Sequence[Any],
        letters: Sequence[DeadLetter] = (),
    ) -> None:
        """Retry later (raises NackMessage after the backoff), or park `records` for good."""
        attempt = self.attempts.failed(position)
        transient = self.policy.is_transient(error)
        if not self.policy.gives_up(error, attempt):
            delay = self.policy.backoff(attempt)
            self.log.warning("attempt %d of %d failed (%r); %s is retried in %.1fs",
                             attempt, self.policy.max_attempts, error, position, delay)
            await asyncio.sleep(delay)
            raise NackMessage() from error
        reason = parked_reason(error, attempt, transient)
        self.log.error("parking %d record(s) at %s: %s", len(records), position, reason)
        await self.publisher.park([*letters, *(DeadLetter(r, reason, error, attempt) for r in records)])
        self.attempts.clear(position)

    def _track_lag(self, group: str, topic: str) -> None:
        self._lag_of.append((group, topic))

    # --- the ASGI app ------------------------------------------------------------------
    def app(self, *, report_lag: bool = True) -> AsgiFastStream:
        app = AsgiFastStream(
            self.broker,
            asgi_routes=[
                ("/health", make_ping_asgi(self.broker, timeout=5.0)),
                ("/metrics", make_asgi_app(REGISTRY)),
            ],
        )
        if report_lag:
            for group, topic in self._lag_of:
                self.in_background(partial(report_lag_forever, self.settings.bootstrap_servers, group, topic))
        app.on_startup(self.open)
        for start in self._after_startup:
            app.after_startup(start)
        app.on_shutdown(self._stop_background)
        app.after_shutdown(self.close)
        return app

    async def _stop_background(self) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background.clear()
