"""The platform's own processes: one per consumer service, and the gateway."""

from __future__ import annotations

import sys
from pathlib import Path

from core.config import REPO_ROOT, Settings
from gateway.readiness import http_health
from infra.process import Component, Health


class AsgiService(Component):
    """A uvicorn-served ASGI app of ours, probed over HTTP."""

    def __init__(
        self, settings: Settings, name: str, app_path: str, port: int, probe: str,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(settings)
        self.name = name
        self.app_path = app_path
        self.port = port
        self.probe = probe
        self.extra_env = extra_env or {}

    def environment(self) -> dict[str, str]:
        return self.extra_env

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


def consumer_service(
    settings: Settings, name: str, index: int, extra_env: dict[str, str] | None = None
) -> AsgiService:
    return AsgiService(
        settings, name, f"consumers.{name}.app:app", settings.services_base_port + index, "/health", extra_env
    )


def gateway_service(settings: Settings, extra_env: dict[str, str] | None = None) -> AsgiService:
    return AsgiService(settings, "gateway", "gateway.main:app", settings.gateway_port, "/healthz", extra_env)
