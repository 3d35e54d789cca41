"""`flywheel up`, `status --json` and `down` on a whole stack of its own."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from core.config import REPO_ROOT, Settings
from infra.process import pid_alive
from infra.stack import all_components
from tests.conftest import make_test_settings

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def lifecycle_settings() -> Iterator[Settings]:
    """Ports 300 above the shared test stack, so both can run in one session."""
    base = make_test_settings()
    offset = 300
    settings = base.model_copy(update={
        "state_dir": base.state_dir.parent / (base.state_dir.name + "-lifecycle"),
        **{name: getattr(base, name) + offset for name in Settings.model_fields
           if name.endswith("_port") or name == "services_base_port"},
    })
    yield settings
    for component in all_components(settings):
        component.stop()


def flywheel(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings.to_env()}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args], cwd=REPO_ROOT, env=env,
        capture_output=True, text=True, timeout=900,
    )


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_up_status_down_leaves_nothing_behind(lifecycle_settings: Settings) -> None:
    up = flywheel(lifecycle_settings, "up")
    assert up.returncode == 0, up.stderr[-3000:]
    assert lifecycle_settings.api_key_file.read_text().startswith("fw_")

    status = flywheel(lifecycle_settings, "status", "--json")
    rows = json.loads(status.stdout)
    names = {row["name"] for row in rows}
    assert {"kafka", "postgres", "mongodb", "mlflow", "triton", "prometheus", "gateway", "indexer",
            "supervisor"} <= names
    assert all(row["restarts"] == 0 for row in rows if row["name"] in {"gateway", "indexer"})
    unhealthy = [row for row in rows if not row["healthy"]]
    assert unhealthy == [] and status.returncode == 0
    pids = [row["pid"] for row in rows]
    assert all(isinstance(pid, int) for pid in pids)

    # Starting again is idempotent: same PIDs.
    again = flywheel(lifecycle_settings, "up")
    assert again.returncode == 0, again.stderr[-3000:]
    assert [row["pid"] for row in json.loads(flywheel(lifecycle_settings, "status", "--json").stdout)] == pids

    down = flywheel(lifecycle_settings, "down")
    assert down.returncode == 0, down.stderr
    assert [pid for pid in pids if pid_alive(pid)] == []
    s = lifecycle_settings
    ports = [s.kafka_port, s.kafka_controller_port, s.postgres_port, s.mongo_port, s.mlflow_port,
             s.triton_http_port, s.triton_grpc_port, s.triton_metrics_port, s.gateway_port, s.prometheus_port,
             *range(s.services_base_port, s.services_base_port + 6)]
    assert [port for port in ports if listening(port)] == []
    after = flywheel(lifecycle_settings, "status", "--json")
    assert after.returncode == 1
    assert not any(row["healthy"] for row in json.loads(after.stdout))
