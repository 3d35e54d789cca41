"""The topic registry: every Kafka topic the platform uses, with its key and retention."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DAY_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key_field: str
    partitions: int
    cleanup_policy: Literal["compact", "delete"]
    retention_ms: int
    description: str

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


CONTENT_UPSERTED = TopicSpec(
    "content-upserted", "id", 6, "compact", -1,
    "Content items to index; a null value (tombstone) deletes the item.",
)
CLICKS = TopicSpec(
    "clicks", "session_id", 6, "delete", 365 * DAY_MS,
    "Search sessions: search, click and conversion events.",
)
TRAINING_REQUESTED = TopicSpec(
    "training-requested", "run_id", 1, "delete", 30 * DAY_MS,
    "Requests to fine-tune the embedding model.",
)
MODEL_PUBLISHED = TopicSpec(
    "model-published", "model_version", 1, "delete", 90 * DAY_MS,
    "Model versions that passed the evaluation gate.",
)
REINDEX_REQUESTED = TopicSpec(
    "reindex-requested", "model_version", 1, "delete", 30 * DAY_MS,
    "Requests to re-embed the corpus with a model version.",
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
