"""Prometheus for the local stack: the server built from its Go module, scraping every service.

`prometheus` is built with `go install` from the Go module proxy (github.com/prometheus/prometheus,
whose module versions v0.3XX.Y are the releases 3.XX.Y) into the shared tools directory, once.
The scrape configuration is generated from the settings: each consumer service process and
the gateway (a file of targets, rewritten on every `flywheel up`, so `--scale` is followed
without a restart), Triton's metrics port and Prometheus itself. Job and label names are the
ones compose's infra/prometheus/prometheus.yml gives, so the Grafana dashboards
(infra/grafana/dashboards) read both alike.

    python -m infra.prometheus            build prometheus (if needed) and print its path
    python -m infra.prometheus config     print the scrape configuration of the settings
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from core.config import Settings, get_settings
from gateway.readiness import http_health
from infra.process import Component, Health, require_program

PROMETHEUS_MODULE = "github.com/prometheus/prometheus"
PROMETHEUS_VERSION = "v0.316.0"  # Prometheus 3.16.0
RELEASE = "3.16.0"
# The module asks for Go 1.26.7: an older `go` (1.21+) fetches that toolchain itself.
GO_HINT = "Go 1.21 or newer, https://go.dev/doc/install"
# A retention that keeps a week of history for the dashboards and the console's charts.
RETENTION = "7d"


def prometheus_path(tools_dir: Path) -> Path:
    return tools_dir / f"prometheus-{PROMETHEUS_VERSION}" / "prometheus"


def ensure_prometheus(tools_dir: Path | None = None) -> Path:
    """The prometheus binary, built the first time (two builds at once wait for each other).
    Built without the web UI's assets (they are not in the module): the HTTP API is whole."""
    tools_dir = tools_dir or get_settings().tools_dir
    target = prometheus_path(tools_dir)
    if target.exists():
        return target
    go = require_program("go", GO_HINT)
    tools_dir.mkdir(parents=True, exist_ok=True)
    with open(tools_dir / ".prometheus.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():
            return target
        with tempfile.TemporaryDirectory(prefix="prometheus-build-", dir=tools_dir) as scratch:
            env = {**os.environ, "GOBIN": scratch, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
            build = subprocess.run(
                [go, "install", "-tags", "netgo",
                 f"-ldflags=-s -w -X github.com/prometheus/common/version.Version={RELEASE}",
                 f"{PROMETHEUS_MODULE}/cmd/prometheus@{PROMETHEUS_VERSION}"],
                env=env, capture_output=True, text=True,
            )
            if build.returncode != 0:
                raise RuntimeError(
                    f"building prometheus {PROMETHEUS_VERSION} failed:\n{build.stderr[-3000:]}")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(Path(scratch) / "prometheus", target)
    return target


def service_targets(settings: Settings) -> list[dict[str, Any]]:
    """File-discovery groups: one per process of our services (each consumer service replica
    and the gateway), labelled with its service and process name."""
    from infra.services import AsgiService
    from infra.stack import service_components  # the stack lists this component too

    return [
        {"targets": [f"{settings.host}:{c.port}"], "labels": {"service": c.service, "process": c.name}}
        for c in service_components(settings) if isinstance(c, AsgiService)
    ]


def scrape_config(settings: Settings, targets_file: Path) -> dict[str, Any]:
    interval = f"{settings.prometheus_scrape_interval_s:g}s"

    def static(service: str, port: int) -> list[dict[str, Any]]:
        return [{"targets": [f"{settings.host}:{port}"], "labels": {"service": service}}]

    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {"job_name": "flywheel",
             "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "30s"}]},
            {"job_name": "triton", "static_configs": static("triton", settings.triton_metrics_port)},
            {"job_name": "prometheus", "static_configs": static("prometheus", settings.prometheus_port)},
        ],
    }


def config_text(settings: Settings, targets_file: Path) -> str:
    return yaml.safe_dump(scrape_config(settings, targets_file), sort_keys=False)


class Prometheus(Component):
    name = "prometheus"

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.prometheus_port}"

    @property
    def data_dir(self) -> Path:
        return self.settings.state_dir / "prometheus"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "prometheus.yml"

    @property
    def targets_file(self) -> Path:
        return self.data_dir / "targets.json"

    def write_targets(self) -> None:
        """The processes to scrape as they are now (Prometheus rereads the file on change)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.targets_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(service_targets(self.settings), indent=2))
        tmp.replace(self.targets_file)

    def prepare(self) -> None:
        ensure_prometheus(self.settings.tools_dir)
        (self.data_dir / "tsdb").mkdir(parents=True, exist_ok=True)
        self.write_targets()
        self.config_file.write_text(config_text(self.settings, self.targets_file))

    def start(self) -> None:
        if self.pid() is not None:
            self.write_targets()
        super().start()

    def command(self) -> list[str]:
        s = self.settings
        return [
            str(prometheus_path(s.tools_dir)),
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.data_dir / 'tsdb'}",
            f"--storage.tsdb.retention.time={RETENTION}",
            f"--web.listen-address={s.host}:{s.prometheus_port}",
            "--log.level=warn",
        ]

    def check(self) -> Health:
        return http_health(self.url + "/-/ready")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(ensure_prometheus())
        return 0
    if argv == ["config"]:
        prometheus = Prometheus(get_settings())
        print(config_text(prometheus.settings, prometheus.targets_file), end="")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
