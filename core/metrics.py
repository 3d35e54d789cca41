"""Prometheus metrics of our own, beside FastStream's per-topic message metrics.

Each service is its own process, so the default registry is the service's registry.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EMBED_SECONDS = Histogram(
    "flywheel_embedding_seconds", "Time to embed one batch of texts through Triton.",
    ["model_version"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
EMBEDDED_TEXTS = Counter("flywheel_embedded_texts_total", "Texts embedded through Triton.", ["model_version"])
DB_WRITE_SECONDS = Histogram(
    "flywheel_db_write_seconds", "Time of one vector-store write transaction.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BATCH_RECORDS = Histogram(
    "flywheel_batch_records", "Records per consumed batch.", ["topic"],
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000),
)
DEAD_LETTERS = Counter("flywheel_dead_letters_total", "Records sent to a dead-letter topic.", ["topic"])
CONSUMER_LAG = Gauge(
    "flywheel_consumer_lag", "End offset minus the group's committed offset.", ["group", "topic", "partition"]
)
