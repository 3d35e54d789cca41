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
# Offsets behind the lag: the rate of a topic's end offset is the events/s written to it, the
# rate of a group's committed offset the events/s it gets through (time to catch up = lag / that).
TOPIC_END_OFFSET = Gauge("flywheel_topic_end_offset", "Next offset to be written, per partition.",
                         ["topic", "partition"])
COMMITTED_OFFSET = Gauge(
    "flywheel_consumer_committed_offset", "The group's committed offset, per partition.",
    ["group", "topic", "partition"],
)
SEARCH_SECONDS = Histogram(
    "flywheel_search_seconds", "Time the gateway takes to answer a search (embed the query, read the index).",
    ["mode"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
TRAINING_RUNS = Counter("flywheel_training_runs_total", "Training runs ended, by outcome.", ["outcome"])
GATE_DECISIONS = Counter(
    "flywheel_training_gate_total", "Evaluation-gate decisions on trained candidates.", ["decision"]
)
# Click-through per serving version: searches folded into sessions and the clicks attached to
# them, each counted once (a redelivered event is not applied twice).
SESSION_SEARCHES = Counter(
    "flywheel_session_searches_total", "Searches recorded in sessions, by the version that served them.",
    ["model_version"],
)
SESSION_CLICKS = Counter(
    "flywheel_session_clicks_total", "Clicks on a session's search results, by the version that served them.",
    ["model_version"],
)
