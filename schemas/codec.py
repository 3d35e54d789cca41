"""Bytes on a topic <-> event models, with errors that list every bad field.

Producers call :func:`validate` then :func:`encode`; consumers call :func:`decode_record`
(or :func:`decode`) and send what raises :class:`EventValidationError` to the topic's DLQ.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID, uuid5

import pydantic

from schemas import compat
from schemas.content import content_key, parse_content_key
from schemas.envelope import Envelope
from schemas.topics import TopicSpec, get_topic

# Events sent without an event_id get one derived from their Kafka coordinates, so every
# redelivery of the same record carries the same idempotency key.
RECORD_ID_NAMESPACE = UUID("6f0d3c1e-4f7a-5b8e-9c2d-1a2b3c4d5e6f")

# (event type, major) -> function turning a value of that previous major into the current shape.
Upgrader = Callable[[dict[str, Any]], dict[str, Any]]
UPGRADERS: dict[tuple[str, int], Upgrader] = {}


@dataclass(frozen=True)
class FieldError:
    loc: str
    msg: str
    type: str


class EventValidationError(ValueError):
    """A value does not satisfy its topic's schema; ``errors`` lists every bad field."""

    def __init__(self, topic: str, errors: Iterable[FieldError]) -> None:
        self.topic = topic
        self.errors = list(errors)
        super().__init__(str(self))

    def __str__(self) -> str:
        details = "; ".join(f"{e.loc}: {e.msg}" for e in self.errors)
        count = len(self.errors)
        return f"invalid {self.topic} event ({count} error{'s' * (count != 1)}): {details}"

    def to_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "errors": [asdict(e) for e in self.errors]}


class SchemaVersionError(EventValidationError):
    """The event's schema_version is outside what this reader accepts."""


class KafkaRecord(Protocol):
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


# Fields of free-form JSON (pydantic's JsonValue): below them pydantic adds the JSON type it
# tried after each key or index, ('metadata', 'b', 'list', 1, 'dict', 'c', 'float').
JSON_FIELDS = {"metadata"}


def _without_json_tags(parts: list[int | str]) -> list[int | str]:
    kept: list[int | str] = []
    inside, tag_next = False, False
    for part in parts:
        if inside and tag_next:
            tag_next = False  # the JSON type pydantic tried: not a name the sender wrote
            continue
        kept.append(part)
        if inside:
            tag_next = True
        elif part in JSON_FIELDS and len(kept) == 1:
            inside = True
    return kept


def _loc(spec: TopicSpec, loc: tuple[int | str, ...]) -> str:
    parts = list(loc)
    # A discriminated union puts the tag first: ('search', 'results', 0, 'rank').
    if len(spec.events) > 1 and parts and parts[0] in spec.event_types:
        parts = parts[1:]
    parts = _without_json_tags(parts)
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(value)"


def _from_pydantic(spec: TopicSpec, error: pydantic.ValidationError) -> EventValidationError:
    return EventValidationError(spec.name, [_field_error(spec, e) for e in error.errors()])


def _field_error(spec: TopicSpec, error: Any) -> FieldError:
    if error["type"] in ("union_tag_not_found", "union_tag_invalid"):
        # Pydantic's "Unable to extract tag using discriminator" names no fix: name the types.
        given = error.get("ctx", {}).get("tag")
        what = f"{given!r} is not a type of this topic" if given is not None else "is required"
        return FieldError("type", f"{what}: one of {', '.join(map(repr, spec.event_types))}", error["type"])
    return FieldError(_loc(spec, error["loc"]), error["msg"], error["type"])


def _apply_version_policy(spec: TopicSpec, data: dict[str, Any]) -> dict[str, Any]:
    model = spec.event_types.get(data.get("type"))  # type: ignore[arg-type]
    version = data.get("schema_version")
    if model is None or version is None:
        return data  # validation reports the missing or bad type / version
    try:
        how = compat.check(version, model.current_version())
    except compat.IncompatibleSchemaVersion as error:
        raise SchemaVersionError(
            spec.name, [FieldError("schema_version", str(error), "schema_version")]
        ) from None
    if how is compat.Compatibility.NEWER_MINOR:
        # Additive change from a newer writer: ignore the fields this reader does not know.
        return {k: v for k, v in data.items() if k in model.model_fields}
    if how is compat.Compatibility.PREVIOUS_MAJOR:
        upgrade = UPGRADERS.get((model.event_type(), compat.SchemaVersion.parse(version).major))
        if upgrade is not None:
            return upgrade(data)
    return data


def validate(
    topic: str | TopicSpec, data: Any, *, defaults: Mapping[str, Any] | None = None
) -> Envelope:
    """A JSON-like value -> the topic's event model; envelope fields absent get defaults."""
    spec = topic if isinstance(topic, TopicSpec) else get_topic(topic)
    if not isinstance(data, Mapping):
        raise EventValidationError(
            spec.name, [FieldError("(value)", f"expected a JSON object, got {type(data).__name__}", "type")]
        )
    values = dict(data)
    if spec.default_type is not None:
        values.setdefault("type", spec.default_type)
    for name, value in (defaults or {}).items():
        values.setdefault(name, value)
    values = _apply_version_policy(spec, values)
    try:
        event: Envelope = spec.adapter.validate_python(values)
    except pydantic.ValidationError as error:
        raise _from_pydantic(spec, error) from None
    return event


def decode(
    topic: str | TopicSpec, value: bytes | None, *, defaults: Mapping[str, Any] | None = None
) -> Envelope | None:
    """A Kafka value -> the event; None for a tombstone on a topic that allows them."""
    spec = topic if isinstance(topic, TopicSpec) else get_topic(topic)
    if value is None:
        if spec.tombstones:
            return None
        raise EventValidationError(
            spec.name, [FieldError("(value)", "a null value (tombstone) is not allowed here", "null")]
        )
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EventValidationError(
            spec.name, [FieldError("(value)", f"invalid JSON: {error}", "json")]
        ) from None
    return validate(spec, data, defaults=defaults)


def record_defaults(topic: str, partition: int, offset: int, timestamp_ms: int) -> dict[str, Any]:
    """Envelope defaults taken from where and when a record was written."""
    return {
        "event_id": uuid5(RECORD_ID_NAMESPACE, f"{topic}/{partition}/{offset}"),
        "occurred_at": datetime.fromtimestamp(timestamp_ms / 1000, UTC),
    }


def decode_record(record: KafkaRecord) -> Envelope | None:
    """What a consumer calls on each record (e.g. aiokafka's ConsumerRecord).

    None is a tombstone (content-upserted: parse_content_key(record.key) says what to
    delete). A key that does not match the value's key field is an error: compaction and
    per-key ordering rely on it.
    """
    spec = get_topic(record.topic)
    defaults = record_defaults(record.topic, record.partition, record.offset, record.timestamp)
    event = decode(spec, record.value, defaults=defaults)
    if event is not None and record.key is not None:
        key = record.key.decode("utf-8", "replace")
        expected = spec.key_of(event)
        if key != expected:
            raise EventValidationError(spec.name, [FieldError(
                "(key)", f"record key {key!r} does not match the value's key {expected!r}", "key"
            )])
    return event


__all__ = [
    "EventValidationError", "FieldError", "SchemaVersionError", "content_key", "decode", "decode_record",
    "encode", "parse_content_key", "record_defaults", "validate",
]


def encode(event: Envelope) -> bytes:
    return event.model_dump_json(exclude_none=True).encode()
