"""Metrics and tracing shared by every service.

Tracing follows the standard OTEL_* variables: with OTEL_TRACES_EXPORTER unset or "none"
no spans leave the process; "otlp" or "console" turn the exporter on.
"""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
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


def _exporter_from_env() -> SpanExporter | None:
    kind = os.environ.get("OTEL_TRACES_EXPORTER", "none").lower()
    if kind == "console":
        return ConsoleSpanExporter()
    if kind == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    return None
