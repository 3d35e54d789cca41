"""The platform's own processes: one per consumer service (or several: `flywheel up --scale`),
and the gateway."""

from __future__ import annotations

import sys
from pathlib import Path

from consumers.service import SERVICES
from core.config import REPO_ROOT, Settings
from gateway.readiness import http_health
from infra.kafka_security import service_environment
from infra.process import Component, Health


class AsgiService(Component):
    """A uvicorn-served ASGI app of ours, probed over HTTP."""

    def __init__(
        self, settings: Settings, name: str, app_path: str, port: int, probe: str,
        extra_env: dict[str, str] | None = None, service: str | None = None,
    ) -> None:
        super().__init__(settings)
        self.name = name
        # The service this process runs: a replica (`indexer-2`) runs `indexer`.
        self.service = service or name
        self.app_path = app_path
        self.port = port
        self.probe = probe
        self.extra_env = extra_env or {}

    def environment(self) -> dict[str, str]:
        # Each service is its own Kafka principal (infra/kafka_acls.py); extra_env may say otherwise.
        return {**service_environment(self.settings, self.service), **self.extra_env}

    def stop(self, timeout_s: float | None = None) -> None:
        # Past the graceful shutdown of uvicorn and of the broker before SIGKILL.
        super().stop(timeout_s or self.settings.shutdown_grace_s + 30)

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "uvicorn", self.app_path,
            "--host", self.settings.host, "--port", str(self.port),
            "--no-access-log", "--timeout-graceful-shutdown", str(int(self.settings.shutdown_grace_s) + 15),
        ]

    def cwd(self) -> Path:
        return REPO_ROOT

    def check(self) -> Health:
        return http_health(self.url + self.probe)


def replica_name(name: str, replica: int) -> str:
    """`indexer` for the first process of a service, `indexer-2`, `indexer-3`... for the others."""
    return name if replica == 1 else f"{name}-{replica}"


def replica_port(settings: Settings, index: int, replica: int) -> int:
    """The first processes of the consumer services take consecutive ports from
    `services_base_port`; each further replica takes the next block, one port per service."""
    return settings.services_base_port + len(SERVICES) * (replica - 1) + index


def consumer_service(
    settings: Settings, name: str, index: int, extra_env: dict[str, str] | None = None,
    replica: int = 1,
) -> AsgiService:
    """Process `replica` (from 1) of consumer service `name`, the `index`-th of SERVICES.

    Every replica runs the same app with the same settings, so all join the service's one
    consumer group and Kafka divides the topic's partitions among them; each has its own
    name (PID file, log) and health port."""
    return AsgiService(
        settings, replica_name(name, replica), f"consumers.{name}.app:app",
        replica_port(settings, index, replica), "/health", extra_env, service=name,
    )


def gateway_service(settings: Settings, extra_env: dict[str, str] | None = None) -> AsgiService:
    return AsgiService(settings, "gateway", "gateway.main:app", settings.gateway_port, "/healthz", extra_env)
