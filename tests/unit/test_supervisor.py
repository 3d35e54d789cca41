"""The supervisor's decisions over fake services: restart what crashed, with doubling back-off
reset after a good run; leave alone what was stopped on purpose."""

from __future__ import annotations

from pathlib import Path

from core.config import Settings
from infra.process import Component, Health
from infra.supervisor import Supervisor, read_state, restarts


class FakeService(Component):
    name = "indexer"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.running: int | None = 100
        self.spawned = 0

    @property
    def url(self) -> str:
        return "fake"

    def command(self) -> list[str]:
        return ["fake"]

    def check(self) -> Health:
        return Health(True, "fake")

    def pid(self) -> int | None:
        return self.running

    def spawn(self) -> int:
        self.spawned += 1
        self.running = 100 + self.spawned
        return self.running


def setup(tmp_path: Path) -> tuple[Settings, FakeService, Supervisor]:
    settings = Settings(state_dir=tmp_path, supervisor_backoff_s=1, supervisor_max_backoff_s=4,
                        supervisor_reset_after_s=30)
    settings.run_dir.mkdir(parents=True)
    service = FakeService(settings)
    service.pid_file.write_text("{}")
    return settings, service, Supervisor(settings, [service])


def crash_and_restart(supervisor: Supervisor, service: FakeService, now: float) -> float:
    """Crash the service at `now`; return how long the supervisor waited to restart it."""
    service.running = None
    supervisor.round(now)
    waited = 0.0
    while service.running is None:
        waited += 0.5
        supervisor.round(now + waited)
        assert waited < 100
    return waited


def test_restarts_with_doubling_backoff_reset_after_a_good_run(tmp_path: Path) -> None:
    settings, service, supervisor = setup(tmp_path)
    supervisor.round(0)
    assert supervisor.watches["indexer"].state == "running"
    assert crash_and_restart(supervisor, service, 1) == 1.0
    assert crash_and_restart(supervisor, service, 3) == 2.0
    assert crash_and_restart(supervisor, service, 6) == 4.0
    assert crash_and_restart(supervisor, service, 11) == 4.0  # at most the longest back-off
    assert supervisor.watches["indexer"].restarts == 4
    # Ran long enough: the next crash is restarted after the first back-off again.
    supervisor.round(16)
    supervisor.round(50)
    assert crash_and_restart(supervisor, service, 51) == 1.0
    supervisor.write()
    assert restarts(settings) == {"indexer": 5}
    assert read_state(settings)["services"]["indexer"]["state"] == "running"


def test_a_service_stopped_on_purpose_stays_down(tmp_path: Path) -> None:
    _, service, supervisor = setup(tmp_path)
    supervisor.round(0)
    # `stop` marks the service before signalling it...
    service.stopping_file.touch()
    service.running = None
    for t in range(1, 10):
        supervisor.round(t)
    # ...and removes the PID file once it is gone.
    service.stopping_file.unlink()
    service.pid_file.unlink()
    for t in range(10, 20):
        supervisor.round(t)
    assert service.spawned == 0
    assert supervisor.watches["indexer"].state == "stopped"


def test_a_failed_restart_backs_off_further(tmp_path: Path) -> None:
    _, service, supervisor = setup(tmp_path)

    def broken() -> int:
        raise OSError("no such program")

    service.spawn = broken  # type: ignore[method-assign]
    service.running = None
    supervisor.round(0)
    supervisor.round(1)
    watch = supervisor.watches["indexer"]
    assert watch.restarts == 0 and "no such program" in str(watch.last_exit)
    assert watch.next_attempt == 1 + 2
