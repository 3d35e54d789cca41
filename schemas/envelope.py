"""The envelope every event value carries, flat beside the payload fields.

One JSON object per Kafka value: ``{"event_id": ..., "type": ..., "schema_version": ...,
"occurred_at": ..., "tenant": ..., "source": ..., <payload fields>}``. W3C trace context
travels in the Kafka headers, not in the value.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar
from uuid import UUID, uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from schemas.compat import VERSION_PATTERN

CURRENT_SCHEMA_VERSION = "1.0"
DEFAULT_TENANT = "default"
UNKNOWN_SOURCE = "unknown"
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


def utc_now() -> datetime:
    return datetime.now(UTC)


def contains_nul(value: Any) -> bool:
    """Whether a NUL character hides anywhere in a JSON-like value (PostgreSQL rejects it)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(contains_nul(k) or contains_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(contains_nul(v) for v in value)
    return False


# The largest integer the stores hold (PostgreSQL bigint, MongoDB's 8-byte int): every integer
# field of an event or request is bounded by it or less.
INT64_MAX = 2**63 - 1


def reject_nul(value: Any) -> Any:
    if contains_nul(value):
        raise ValueError("must not contain NUL (\\u0000) characters")
    return value


class Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    # Names of the envelope fields, in the order they are documented.
    ENVELOPE_FIELDS: ClassVar[tuple[str, ...]] = (
        "event_id", "type", "schema_version", "occurred_at", "tenant", "source",
    )

    event_id: UUID = Field(
        default_factory=uuid4,
        description="Unique id of this event: the idempotency key. Consumers ignore repeats.",
    )
    type: str = Field(description="The event type; decides the payload fields.")
    schema_version: str = Field(
        default=CURRENT_SCHEMA_VERSION,
        pattern=VERSION_PATTERN,
        description="MAJOR.MINOR of this event type's schema (see the compatibility policy).",
    )
    occurred_at: AwareDatetime = Field(
        default_factory=utc_now,
        description="When the event happened, ISO 8601 with a time zone.",
    )
    tenant: str = Field(
        default=DEFAULT_TENANT, max_length=128, pattern=TENANT_PATTERN,
        description="Tenant the event belongs to: letters, digits, '.', '_' or '-'.",
    )
    source: str = Field(
        default=UNKNOWN_SOURCE, min_length=1, max_length=256,
        description="The system that produced the event, e.g. 'gateway' or 'crm-sync'.",
    )

    # Every field of every event: a NUL would make the record a poison message downstream.
    _no_nul = field_validator("*", mode="after")(reject_nul)

    @classmethod
    def event_type(cls) -> str:
        """The literal value of ``type`` for this event class."""
        default = cls.model_fields["type"].default
        if not isinstance(default, str):
            raise TypeError(f"{cls.__name__} does not fix its event type")
        return default

    @classmethod
    def current_version(cls) -> str:
        return str(cls.model_fields["schema_version"].default)
