"""The topic registry: every Kafka topic the platform uses, its key, retention and events.

``infra.kafka`` creates the topics from here; producers take the Kafka key from
``key_field`` and validate values with the topic's event models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated, Any, Literal, Union

from pydantic import Field, TypeAdapter

from schemas.clicks import ClickEvent, ConversionEvent, SearchEvent
from schemas.content import ContentUpserted
from schemas.envelope import Envelope
from schemas.model_published import ModelPublished
from schemas.reindex import ReindexRequested
from schemas.training import TrainingRequested

DAY_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key_field: str
    partitions: int
    cleanup_policy: Literal["compact", "delete"]
    retention_ms: int
    description: str
    events: tuple[type[Envelope], ...] = field(default=())
    # Whether a null value (tombstone) is a valid event: a delete of the key.
    tombstones: bool = False

    @property
    def dlq(self) -> str:
        return f"{self.name}.dlq"

    def kafka_config(self) -> dict[str, str]:
        config = {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms)}
        if self.cleanup_policy == "compact":
            # Tombstones must outlive any reader that replays from offset 0 for a backfill.
            config["delete.retention.ms"] = str(7 * DAY_MS)
        return config

    def dlq_config(self) -> dict[str, str]:
        return {"cleanup.policy": "delete", "retention.ms": str(30 * DAY_MS)}

    # --- values ----------------------------------------------------------------------
    @property
    def event_types(self) -> dict[str, type[Envelope]]:
        return {model.event_type(): model for model in self.events}

    @property
    def default_type(self) -> str | None:
        """The event type when the topic carries only one; None when ``type`` must be given."""
        return self.events[0].event_type() if len(self.events) == 1 else None

    @cached_property
    def value_type(self) -> Any:
        """The pydantic type of a value: the model, or a union discriminated by ``type``."""
        if len(self.events) == 1:
            return self.events[0]
        return Annotated[Union[self.events], Field(discriminator="type")]  # noqa: UP007

    @cached_property
    def adapter(self) -> TypeAdapter[Any]:
        return TypeAdapter(self.value_type)

    def key_of(self, event: Envelope) -> str:
        """The Kafka key of an event: ``key_field`` (content-upserted: ``<tenant>/<id>``
        outside the default tenant, see schemas.content.content_key)."""
        if isinstance(event, ContentUpserted):
            return event.key
        return str(getattr(event, self.key_field))


CONTENT_UPSERTED = TopicSpec(
    "content-upserted", "id", 6, "compact", -1,
    "Content items to index; a null value (tombstone) deletes the item.",
    events=(ContentUpserted,), tombstones=True,
)
CLICKS = TopicSpec(
    "clicks", "session_id", 6, "delete", 365 * DAY_MS,
    "Search sessions: search, click and conversion events.",
    events=(SearchEvent, ClickEvent, ConversionEvent),
)
TRAINING_REQUESTED = TopicSpec(
    "training-requested", "run_id", 1, "delete", 30 * DAY_MS,
    "Requests to fine-tune the embedding model.",
    events=(TrainingRequested,),
)
MODEL_PUBLISHED = TopicSpec(
    "model-published", "model_version", 1, "delete", 90 * DAY_MS,
    "Model versions that passed the evaluation gate.",
    events=(ModelPublished,),
)
REINDEX_REQUESTED = TopicSpec(
    "reindex-requested", "model_version", 1, "delete", 30 * DAY_MS,
    "Requests to re-embed the corpus with a model version.",
    events=(ReindexRequested,),
)

TOPICS: dict[str, TopicSpec] = {
    spec.name: spec
    for spec in (CONTENT_UPSERTED, CLICKS, TRAINING_REQUESTED, MODEL_PUBLISHED, REINDEX_REQUESTED)
}


def get_topic(name: str) -> TopicSpec:
    try:
        return TOPICS[name]
    except KeyError:
        raise KeyError(f"unknown topic {name!r}; known topics: {', '.join(TOPICS)}") from None
