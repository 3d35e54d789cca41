"""Local supervision against real processes: a service killed with SIGKILL comes back (counted),
one stopped on purpose stays down, `down` leaves nothing behind, and a stale PID file naming an
unrelated process is never signalled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from core.config import REPO_ROOT, Settings
from infra import stack
from infra.process import Component, ProcessIdentity, pid_alive
from infra.services import consumer_service
from infra.supervisor import SupervisorComponent, read_state, restarts
from tests.helpers import share_kafka_credentials

pytestmark = pytest.mark.integration


def wait_for(predicate: Callable[[], bool], timeout: float, message: str, interval: float = 0.3) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} (after {timeout:.0f} s)")
        time.sleep(interval)


def test_stale_pid_file_naming_another_process_is_not_signalled(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, services_base_port=1)
    component = consumer_service(settings, "indexer", 0)
    settings.run_dir.mkdir(parents=True)
    sleeper = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        wait_for(lambda: (ProcessIdentity.of(sleeper.pid) or ProcessIdentity(0, 0, "", ())).cmdline != (),
                 timeout=5, message="sleep did not start")
        real = ProcessIdentity.of(sleeper.pid)
        assert real is not None and real.cmdline == ("sleep", "300")
        stale = [
            str(sleeper.pid),  # a bare PID (older format): not our program
            # what we recorded for an earlier process that had this PID
            ProcessIdentity(sleeper.pid, real.start_ticks - 1, real.boot_id, real.cmdline).to_json(),
            ProcessIdentity(sleeper.pid, real.start_ticks, "another-boot", real.cmdline).to_json(),
            ProcessIdentity(sleeper.pid, real.start_ticks, real.boot_id, ("sleep", "301")).to_json(),
        ]
        for content in stale:
            component.pid_file.write_text(content)
            assert component.pid() is None, content
            assert component.status()["pid"] is None
            component.stop(timeout_s=1)
            assert sleeper.poll() is None, f"stop signalled an unrelated process for {content}"
            assert not component.pid_file.exists()
        # The identity we recorded ourselves is trusted, and stop does stop it.
        component.pid_file.write_text(real.to_json())
        assert component.pid() == sleeper.pid
        component.stop(timeout_s=5)
        sleeper.wait(timeout=10)  # stop already reaped it (our child), so no exit status here
        assert ProcessIdentity.of(sleeper.pid) is None
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()


@pytest.fixture()
def supervised(kafka: Component, mongodb: Component, test_settings: Settings) -> Iterator[Settings]:
    """A stack of its own (state and service ports) over the test stack's Kafka and MongoDB."""
    settings = test_settings.model_copy(update={
        "state_dir": test_settings.state_dir / "supervised",
        "services_base_port": test_settings.kafka_port + 40,
        "supervisor_backoff_s": 0.5,
    })
    share_kafka_credentials(test_settings, settings)
    yield settings
    stack.down(settings)


def flywheel(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """The `flywheel` command on this stack's settings."""
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=REPO_ROOT,
                          env={**os.environ, **settings.to_env()}, capture_output=True, text=True,
                          timeout=600)


def status_rows(settings: Settings) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in json.loads(flywheel(settings, "status", "--json").stdout)}


def test_supervisor_restarts_a_killed_service(supervised: Settings) -> None:
    settings = supervised
    sessions = consumer_service(settings, "sessions", 1)
    supervisor = SupervisorComponent(settings)
    up = flywheel(settings, "up", "sessions")
    assert up.returncode == 0, up.stderr[-3000:]
    assert "ready supervisor" in up.stderr
    first = sessions.pid()
    watcher = supervisor.pid()
    assert first is not None and watcher is not None
    wait_for(lambda: read_state(settings).get("services", {}).get("sessions", {}).get("pid") == first,
             timeout=20, message="the supervisor never saw sessions running")

    os.kill(first, signal.SIGKILL)

    def back() -> bool:
        pid = sessions.pid()
        return pid not in (None, first) and sessions.check().healthy

    wait_for(back, timeout=180, interval=1, message="sessions was not restarted")
    second = sessions.pid()
    assert second is not None and not pid_alive(first)
    watch = read_state(settings)["services"]["sessions"]
    assert watch["state"] == "running" and watch["pid"] == second and watch["restarts"] == 1
    assert watch["last_restart_at"] and watch["last_exit"] == "exited"
    rows = status_rows(settings)
    assert rows["sessions"]["healthy"] and rows["sessions"]["pid"] == second
    assert rows["sessions"]["restarts"] == 1 and rows["indexer"]["restarts"] == 0
    assert rows["kafka"]["restarts"] is None  # components are not supervised
    assert rows["supervisor"]["healthy"] and "1 restart" in str(rows["supervisor"]["detail"])

    # Stopped on purpose (compose's `stop`): the supervisor leaves it down.
    assert flywheel(settings, "down", "sessions").returncode == 0
    time.sleep(3 * settings.supervisor_backoff_s + 2)
    assert sessions.pid() is None and not pid_alive(second)
    assert read_state(settings)["services"]["sessions"]["state"] == "stopped"
    assert restarts(settings)["sessions"] == 1

    # Started again under the same supervisor, then `down`: nothing is left behind.
    assert flywheel(settings, "up", "sessions").returncode == 0
    third = sessions.pid()
    assert third is not None and supervisor.pid() == watcher
    assert flywheel(settings, "down").returncode == 0
    assert [pid for pid in (first, second, third, watcher) if pid_alive(pid)] == []
    assert list(settings.run_dir.glob("*.pid")) == []
    assert read_state(settings) == {}
