"""Metrics and tracing shared by every service.

Tracing follows the standard OTEL_* variables: with OTEL_TRACES_EXPORTER unset or "none"
no spans leave the process; "otlp" or "console" turn the exporter on.
"""

from __future__ import annotations

import json
import os
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter


def configure_tracing(service_name: str) -> TracerProvider:
    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    )
    exporter = _exporter_from_env()
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def span_line(span: ReadableSpan) -> str:
    """One span as one JSON line. The SDK's own formatter fails on bytes attributes (such as
    a Kafka key), and one such span would take its whole export batch down with it."""
    context = span.get_span_context()
    parent = span.parent

    def ids(trace_id: int, span_id: int) -> dict[str, str]:
        return {"trace_id": f"0x{trace_id:032x}", "span_id": f"0x{span_id:016x}"}

    record = {
        "name": span.name,
        "context": ids(context.trace_id, context.span_id) if context else {},
        "parent_id": f"0x{parent.span_id:016x}" if parent else None,
        "kind": str(span.kind),
        "start_time": span.start_time,
        "end_time": span.end_time,
        "status": str(span.status.status_code),
        "attributes": dict(span.attributes or {}),
        "links": [{"context": ids(link.context.trace_id, link.context.span_id),
                   "attributes": dict(link.attributes or {})} for link in span.links],
        "service": span.resource.attributes.get("service.name"),
    }
    return json.dumps(record, default=_jsonable) + "\n"


def _jsonable(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _exporter_from_env() -> SpanExporter | None:
    kind = os.environ.get("OTEL_TRACES_EXPORTER", "none").lower()
    if kind == "console":
        return ConsoleSpanExporter(formatter=span_line)
    if kind == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    return None
