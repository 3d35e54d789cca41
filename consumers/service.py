"""Builds a consumer service: a FastStream Kafka broker with telemetry, served over ASGI.

Each service answers GET /health (broker reachable) and GET /metrics (Prometheus), so the
local runtime, compose and Kubernetes probe it the same way.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faststream.asgi import AsgiFastStream, make_ping_asgi
from faststream.kafka import KafkaBroker
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from prometheus_client import REGISTRY, CollectorRegistry, make_asgi_app

from consumers.lag import report_lag_forever
from core.config import Settings, get_settings
from core.logging import configure_logging
from core.telemetry import configure_tracing

SERVICES = ("indexer", "sessions", "trainer", "deployer", "reindexer", "improver")


async def raw_message(message: Any) -> Any:
    """A FastStream decoder handing handlers aiokafka's own record(s): keys, tombstones and
    offsets stay visible, and decoding is ours (schemas.codec) so bad records can be parked."""
    return message.raw_message


def create_broker(service: str, settings: Settings | None = None) -> tuple[KafkaBroker, CollectorRegistry]:
    settings = settings or get_settings()
    configure_logging(f"flywheel-{service}")
    # One service per process: the default registry also holds core.metrics.
    registry = REGISTRY
    provider = configure_tracing(f"flywheel-{service}")
    broker = KafkaBroker(
        settings.bootstrap_servers,
        client_id=f"flywheel-{service}",
        # SIGTERM: stop fetching, let the batch in hand finish and commit, then exit.
        graceful_timeout=settings.shutdown_grace_s,
        middlewares=[
            KafkaTelemetryMiddleware(tracer_provider=provider),
            KafkaPrometheusMiddleware(registry=registry, app_name=f"flywheel-{service}"),
        ],
    )
    return broker, registry


def create_app(
    service: str, broker: KafkaBroker, registry: CollectorRegistry, lag_of: tuple[str, str] | None = None
) -> AsgiFastStream:
    """`lag_of` = (group, topic): report that group's lag per partition as a metric."""
    app = AsgiFastStream(
        broker,
        asgi_routes=[
            ("/health", make_ping_asgi(broker, timeout=5.0)),
            ("/metrics", make_asgi_app(registry)),
        ],
    )
    if lag_of is not None:
        tasks: list[asyncio.Task[None]] = []
        group, topic = lag_of
        bootstrap = get_settings().bootstrap_servers

        async def start_lag() -> None:
            tasks.append(asyncio.create_task(report_lag_forever(bootstrap, group, topic)))

        async def stop_lag() -> None:
            for task in tasks:
                task.cancel()

        app.after_startup(start_lag)
        app.on_shutdown(stop_lag)
    return app
