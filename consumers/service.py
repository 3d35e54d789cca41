"""Builds a consumer service: a FastStream Kafka broker with telemetry, served over ASGI.

Each service answers GET /health (broker reachable) and GET /metrics (Prometheus), so the
local runtime, compose and Kubernetes probe it the same way.
"""

from __future__ import annotations

from faststream.asgi import AsgiFastStream, make_ping_asgi
from faststream.kafka import KafkaBroker
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from prometheus_client import CollectorRegistry, make_asgi_app

from core.config import Settings, get_settings
from core.logging import configure_logging
from core.telemetry import configure_tracing, new_registry

SERVICES = ("indexer", "sessions", "trainer", "deployer", "reindexer", "improver")


def create_broker(service: str, settings: Settings | None = None) -> tuple[KafkaBroker, CollectorRegistry]:
    settings = settings or get_settings()
    configure_logging(f"flywheel-{service}")
    registry = new_registry()
    provider = configure_tracing(f"flywheel-{service}")
    broker = KafkaBroker(
        settings.bootstrap_servers,
        client_id=f"flywheel-{service}",
        middlewares=[
            KafkaTelemetryMiddleware(tracer_provider=provider),
            KafkaPrometheusMiddleware(registry=registry, app_name=f"flywheel-{service}"),
        ],
    )
    return broker, registry


def create_app(service: str, broker: KafkaBroker, registry: CollectorRegistry) -> AsgiFastStream:
    return AsgiFastStream(
        broker,
        asgi_routes=[
            ("/health", make_ping_asgi(broker, timeout=5.0)),
            ("/metrics", make_asgi_app(registry)),
        ],
    )
