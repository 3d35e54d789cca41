"""The MLflow tracking server: SQLite backend store, local artifact root."""

from __future__ import annotations

import sys

from gateway.readiness import mlflow_health
from infra.process import Component, Health


class MLflowServer(Component):
    name = "mlflow"

    @property
    def url(self) -> str:
        return self.settings.mlflow_uri

    def prepare(self) -> None:
        (self.settings.state_dir / "mlflow" / "artifacts").mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        root = self.settings.state_dir / "mlflow"
        return [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination", str(root / "artifacts"),
            "--serve-artifacts",
            "--host", self.settings.host,
            "--port", str(self.settings.mlflow_port),
            "--workers", "1",
        ]

    def check(self) -> Health:
        return mlflow_health(self.url)
