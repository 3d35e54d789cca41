"""The publisher SDK: validate, key and send events to Kafka, exactly as the registry says.

    async with Publisher(settings.bootstrap_servers, source="crm-sync") as publisher:
        delivery = await publisher.publish("content-upserted", {"id": "a1", "text": "...", "version": 1})

The producer is idempotent (``enable_idempotence``, ``acks=all``): retries never duplicate
or reorder a partition. Records are batched (``linger_ms``) and compressed; W3C trace context
goes into the headers. ``publish_many`` pipelines its sends for throughput.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from uuid import UUID, uuid4

from aiokafka import AIOKafkaProducer
from aiokafka.codec import has_gzip, has_lz4, has_snappy, has_zstd
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.structs import RecordMetadata
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, TracerProvider

from core.kafka_auth import kafka_client_options
from schemas import codec
from schemas.content import content_key
from schemas.envelope import DEFAULT_TENANT, Envelope
from schemas.topics import CONTENT_UPSERTED, TopicSpec, get_topic

COMPRESSIONS = {"gzip": has_gzip, "lz4": has_lz4, "zstd": has_zstd, "snappy": has_snappy}
DEFAULT_COMPRESSION = "lz4" if has_lz4() else "gzip"


class PublisherError(RuntimeError):
    """Kafka could not be reached or refused the records."""


class BatchValidationError(ValueError):
    """Some events of a batch are invalid; ``errors`` maps each one's index to its error."""

    def __init__(self, errors: dict[int, codec.EventValidationError]) -> None:
        self.errors = errors
        lines = [f"event {i}: {error}" for i, error in sorted(errors.items())]
        super().__init__(f"{len(errors)} invalid event(s), nothing sent:\n" + "\n".join(lines))


@dataclass(frozen=True)
class OutgoingRecord:
    """A validated event ready to send: the Kafka key and value; a None value is a tombstone."""

    topic: str
    key: str
    value: bytes | None
    event_id: UUID | None


@dataclass(frozen=True)
class Delivery:
    topic: str
    partition: int
    offset: int
    key: str
    event_id: UUID | None


class Publisher:
    def __init__(
        self,
        bootstrap_servers: str,
        *,
        source: str = "flywheel-sdk",
        client_id: str = "flywheel-publisher",
        compression: str | None = DEFAULT_COMPRESSION,
        linger_ms: int = 5,
        max_batch_size: int = 256 * 1024,
        request_timeout_ms: int = 30_000,
        tracer_provider: TracerProvider | None = None,
        security: Mapping[str, Any] | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.source = source
        if compression not in (None, *COMPRESSIONS) or (compression and not COMPRESSIONS[compression]()):
            raise ValueError(
                f"compression {compression!r} is not available; use gzip, or install aiokafka[lz4] "
                "for lz4, zstd and snappy"
            )
        self._options: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "client_id": client_id,
            "enable_idempotence": True,
            "acks": "all",
            "compression_type": compression,
            "linger_ms": linger_ms,
            "max_batch_size": max_batch_size,
            "request_timeout_ms": request_timeout_ms,
        }
        # Who we are to Kafka (SASL options); default: FLYWHEEL_KAFKA_* (core/kafka_auth.py).
        self._security = security
        self._tracer = trace.get_tracer("flywheel.publisher", tracer_provider=tracer_provider)
        self._producer: AIOKafkaProducer | None = None

    # --- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        security = kafka_client_options() if self._security is None else self._security
        producer = AIOKafkaProducer(**self._options, **security)  # binds to the running event loop
        try:
            await producer.start()
        except KafkaConnectionError as error:
            await producer.stop()
            raise PublisherError(f"cannot reach Kafka at {self.bootstrap_servers}: {error}") from error
        self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # --- preparing (pure) ------------------------------------------------------------
    def prepare(self, topic: str | TopicSpec, event: Envelope | Mapping[str, Any]) -> OutgoingRecord:
        """Validate an event (a model, or a dict of its fields) and build its Kafka record.

        Envelope fields left out of a dict are filled in: event_id, occurred_at,
        schema_version (current), type (when the topic has one type), and source.
        Raises codec.EventValidationError listing every bad field.
        """
        spec = topic if isinstance(topic, TopicSpec) else get_topic(topic)
        if isinstance(event, Envelope):
            if not isinstance(event, spec.events):
                expected = ", ".join(model.__name__ for model in spec.events)
                raise codec.EventValidationError(spec.name, [codec.FieldError(
                    "(value)", f"a {type(event).__name__} cannot go to {spec.name}; expected {expected}",
                    "model",
                )])
            validated = event
            if "source" not in event.model_fields_set:
                validated = event.model_copy(update={"source": self.source})
        else:
            validated = codec.validate(spec, event, defaults={"source": self.source})
        return OutgoingRecord(spec.name, spec.key_of(validated), codec.encode(validated), validated.event_id)

    def tombstone(self, topic: str | TopicSpec, key: str) -> OutgoingRecord:
        spec = topic if isinstance(topic, TopicSpec) else get_topic(topic)
        if not spec.tombstones:
            raise ValueError(f"topic {spec.name} does not accept tombstones (deletes)")
        if not key:
            raise ValueError("a tombstone needs a non-empty key")
        return OutgoingRecord(spec.name, key, None, None)

    # --- sending ---------------------------------------------------------------------
    async def enqueue(self, record: OutgoingRecord) -> asyncio.Future[RecordMetadata]:
        """Hand a record to the producer's batch; the future resolves once the broker acks it."""
        if self._producer is None:
            raise PublisherError("the publisher is not started (use `async with Publisher(...)`)")
        with self._tracer.start_as_current_span(
            f"{record.topic} publish",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "publish",
                "messaging.destination.name": record.topic,
                "messaging.kafka.message.key": record.key,
            },
        ):
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
        # FastStream links a consumed batch's span to each record's trace by this header.
        carrier["correlation_id"] = str(record.event_id or uuid4())
        headers = [(name, value.encode()) for name, value in sorted(carrier.items())]
        if record.value is not None:
            headers.append(("content-type", b"application/json"))
        try:
            return await self._producer.send(
                record.topic, record.value, key=record.key.encode(), headers=headers
            )
        except KafkaError as error:
            raise PublisherError(f"cannot send to {record.topic}: {error!r}") from error

    async def send(self, record: OutgoingRecord) -> Delivery:
        future = await self.enqueue(record)
        return _delivery(record, await _acked(future, record))

    async def publish(self, topic: str | TopicSpec, event: Envelope | Mapping[str, Any]) -> Delivery:
        """Validate and send one event; returns where it landed once the broker acked it."""
        return await self.send(self.prepare(topic, event))

    async def publish_many(
        self, topic: str | TopicSpec, events: Iterable[Envelope | Mapping[str, Any]]
    ) -> list[Delivery]:
        """Validate every event first (nothing is sent if any is invalid), then pipeline the sends."""
        records: list[OutgoingRecord] = []
        errors: dict[int, codec.EventValidationError] = {}
        for index, event in enumerate(events):
            try:
                records.append(self.prepare(topic, event))
            except codec.EventValidationError as error:
                errors[index] = error
        if errors:
            raise BatchValidationError(errors)
        futures = [await self.enqueue(record) for record in records]
        metadata = await asyncio.gather(*(_acked(f, r) for f, r in zip(futures, records, strict=True)))
        return [_delivery(r, m) for r, m in zip(records, metadata, strict=True)]

    async def delete(self, topic: str | TopicSpec, key: str) -> Delivery:
        """Send a tombstone: a null value that deletes ``key`` (compacted topics only)."""
        return await self.send(self.tombstone(topic, key))

    async def delete_content(self, item_id: str, tenant: str = DEFAULT_TENANT) -> Delivery:
        """Delete a content item: a tombstone on content-upserted with the item's key."""
        return await self.delete(CONTENT_UPSERTED, content_key(tenant, item_id))

    async def flush(self) -> None:
        if self._producer is not None:
            await self._producer.flush()


async def _acked(future: asyncio.Future[RecordMetadata], record: OutgoingRecord) -> RecordMetadata:
    try:
        return await future
    except KafkaError as error:
        raise PublisherError(f"{record.topic} key {record.key!r} was not delivered: {error!r}") from error


def _delivery(record: OutgoingRecord, metadata: RecordMetadata) -> Delivery:
    return Delivery(record.topic, metadata.partition, metadata.offset, record.key, record.event_id)
