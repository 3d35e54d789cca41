"""JSON Schema for every topic's value and an AsyncAPI 3.0 document, built from the registry.

Output is deterministic (sorted keys, no timestamps), so the files under docs/ are committed
and a test fails when they are stale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic.json_schema import models_json_schema

from schemas.envelope import CURRENT_SCHEMA_VERSION
from schemas.topics import TOPICS, TopicSpec

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
KAFKA_BINDING_VERSION = "0.5.0"
CONSUMED_BY = {
    "content-upserted": "indexer, reindexer (backfill)",
    "clicks": "sessions, improver",
    "training-requested": "trainer",
    "model-published": "deployer",
    "reindex-requested": "reindexer",
}
TRACE_HEADERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "traceparent": {"type": "string", "description": "W3C trace context."},
        "tracestate": {"type": "string", "description": "W3C trace state."},
        "content-type": {"type": "string", "const": "application/json"},
    },
}


def dumps(document: Any) -> str:
    return json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def _describe(spec: TopicSpec) -> str:
    text = f"{spec.description} Kafka key: the `{spec.key_field}` field."
    if spec.tombstones:
        text += f" A null value (tombstone) with key `{spec.key_field}` deletes the item."
    return text


def topic_json_schema(spec: TopicSpec) -> dict[str, Any]:
    schema = spec.adapter.json_schema(mode="validation")
    schema["$schema"] = JSON_SCHEMA_DIALECT
    schema["title"] = spec.name
    schema["description"] = _describe(spec)
    schema["x-kafka-key"] = spec.key_field
    return schema


def _channel_id(spec: TopicSpec) -> str:
    head, *rest = spec.name.split("-")
    return head + "".join(part.capitalize() for part in rest)


def asyncapi_document() -> dict[str, Any]:
    models = [model for spec in TOPICS.values() for model in spec.events]
    _, definitions = models_json_schema(
        [(model, "validation") for model in models], ref_template="#/components/schemas/{model}"
    )
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for spec in TOPICS.values():
        channel = _channel_id(spec)
        channel_messages: dict[str, Any] = {}
        for model in spec.events:
            name = model.__name__
            messages[name] = {
                "name": model.event_type(),
                "title": name,
                "summary": (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else name,
                "contentType": "application/json",
                "payload": {"$ref": f"#/components/schemas/{name}"},
                "headers": TRACE_HEADERS,
                "bindings": {"kafka": {
                    "key": {"type": "string", "description": f"the `{spec.key_field}` field"},
                    "bindingVersion": KAFKA_BINDING_VERSION,
                }},
            }
            channel_messages[name] = {"$ref": f"#/components/messages/{name}"}
        channels[channel] = {
            "address": spec.name,
            "description": _describe(spec),
            "messages": channel_messages,
            "bindings": {"kafka": {
                "topic": spec.name,
                "partitions": spec.partitions,
                "topicConfiguration": {
                    "cleanup.policy": [spec.cleanup_policy],
                    "retention.ms": spec.retention_ms,
                },
                "bindingVersion": KAFKA_BINDING_VERSION,
            }},
        }
        operations[f"receive{channel[0].upper()}{channel[1:]}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": f"Consumed by: {CONSUMED_BY.get(spec.name, 'n/a')}.",
            "messages": [{"$ref": f"#/channels/{channel}/messages/{m.__name__}"} for m in spec.events],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Embedding Flywheel events",
            "version": CURRENT_SCHEMA_VERSION,
            "description": (
                "Every value is one flat JSON object: the envelope (event_id, type, schema_version, "
                "occurred_at, tenant, source) beside the payload fields. W3C trace context travels "
                "in the Kafka headers. See docs/events.md."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {"host": "127.0.0.1:9092", "protocol": "kafka", "description": "`flywheel up`"},
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": definitions["$defs"]},
    }


def rendered_docs(out_dir: Path) -> dict[Path, str]:
    """Every exported file and its content."""
    files = {
        out_dir / "schemas" / f"{spec.name}.json": dumps(topic_json_schema(spec)) for spec in TOPICS.values()
    }
    files[out_dir / "asyncapi.json"] = dumps(asyncapi_document())
    return files


def write_docs(out_dir: Path) -> list[Path]:
    written = []
    for path, content in rendered_docs(out_dir).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != content:
            path.write_text(content)
            written.append(path)
    return written


def stale_docs(out_dir: Path) -> list[Path]:
    """Exported files that are missing or differ from what the code generates now."""
    return [
        path for path, content in rendered_docs(out_dir).items()
        if not path.exists() or path.read_text() != content
    ]
