"""Local supervision: restart a crashed service the way compose's `restart: unless-stopped` would.

`flywheel up` starts this small process (`python -m infra.supervisor`, PID file `supervisor.pid`)
after the services; `flywheel down` stops it first. It watches every process of every consumer
service (replicas of `flywheel up --scale` included: the list is re-read every round) and the
gateway through their PID files:

- a process that is gone while its PID file stays (it crashed, or was killed) is started again,
  after a back-off that doubles from `supervisor_backoff_s` up to `supervisor_max_backoff_s` and
  goes back to the start once the service has run for `supervisor_reset_after_s`;
- a service stopped on purpose (`flywheel down <name>`: no PID file, or the `.stopping` marker
  while it stops) is left alone, as compose leaves a stopped container.

What it saw is written to `run/supervisor.json` (restarts, last exit, next attempt) on every
round, and removed when it stops; `flywheel status` shows the restarts from there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.config import REPO_ROOT, Settings, get_settings
from infra.process import Component, Health

log = logging.getLogger("flywheel.supervisor")
ROUND_S = 0.5
# The state file is rewritten every round; older than this, the supervisor is not watching.
STALE_AFTER_S = 10.0


@dataclass
class Watch:
    """What the supervisor knows about one service."""

    restarts: int = 0
    state: str = "running"  # running | backoff | stopped
    last_exit: str | None = None
    last_restart_at: str | None = None
    next_attempt_in_s: float | None = None
    backoff_s: float = 0.0
    pid: int | None = None
    # monotonic times, not written out
    running_since: float = field(default=0.0, repr=False)
    next_attempt: float | None = field(default=None, repr=False)

    def public(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("running_since")
        data.pop("next_attempt")
        return data


def state_file(settings: Settings) -> Path:
    return settings.run_dir / "supervisor.json"


def read_state(settings: Settings) -> dict[str, Any]:
    """The supervisor's last report ({} when there is none)."""
    try:
        data = json.loads(state_file(settings).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def restarts(settings: Settings) -> dict[str, int]:
    services = read_state(settings).get("services", {})
    return {name: int(watch.get("restarts", 0)) for name, watch in services.items()}


class Supervisor:
    """The watching loop; one round every ROUND_S seconds until SIGTERM or SIGINT."""

    def __init__(
        self, settings: Settings, services: list[Component],
        refresh: Callable[[], list[Component]] | None = None,
    ) -> None:
        self.settings = settings
        self.services = services
        # Re-reads the services every round: `flywheel up --scale` adds or removes replicas.
        self.refresh = refresh
        self.watches = {c.name: Watch(backoff_s=settings.supervisor_backoff_s) for c in services}
        self.children: dict[int, str] = {}  # PIDs we started -> service, to read exit statuses
        self.exits: dict[int, str] = {}  # how each of them ended
        self.stopping = False

    def run(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        log.info("watching %s", ", ".join(self.watches))
        while not self.stopping:
            self.round(time.monotonic())
            self.write()
            time.sleep(ROUND_S)
        # Like `compose down`: the counts go with the supervisor.
        state_file(self.settings).unlink(missing_ok=True)
        log.info("stopped")

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def round(self, now: float) -> None:
        self._reap()
        if self.refresh is not None:
            self.services = self.refresh()
            names = {c.name for c in self.services}
            for name in [n for n in self.watches if n not in names]:
                del self.watches[name]
            for name in names - set(self.watches):
                self.watches[name] = Watch(backoff_s=self.settings.supervisor_backoff_s)
        for component in self.services:
            if self.stopping:
                return
            self._watch(component, self.watches[component.name], now)

    def _watch(self, component: Component, watch: Watch, now: float) -> None:
        pid = component.pid()
        if pid is not None:
            if watch.state != "running" or watch.pid != pid:
                watch.state, watch.pid, watch.running_since = "running", pid, now
            elif now - watch.running_since >= self.settings.supervisor_reset_after_s:
                watch.backoff_s = self.settings.supervisor_backoff_s
            watch.next_attempt, watch.next_attempt_in_s = None, None
            return
        if not component.pid_file.exists() or component.stopping_file.exists():
            # Never started, or stopped on purpose: not ours to bring back.
            watch.state, watch.pid, watch.next_attempt, watch.next_attempt_in_s = "stopped", None, None, None
            return
        if watch.next_attempt is None:
            # Our own children have an exit status; a process `flywheel up` started does not.
            watch.last_exit = self.exits.pop(watch.pid, "exited") if watch.pid else "not running"
            log.warning("%s is not running (%s); restarting in %.1fs",
                        component.name, watch.last_exit or "exited", watch.backoff_s)
            watch.state, watch.pid, watch.next_attempt = "backoff", None, now + watch.backoff_s
        watch.next_attempt_in_s = round(max(0.0, watch.next_attempt - now), 1)
        if now < watch.next_attempt:
            return
        # `flywheel down <name>` may have finished meanwhile (the PID file would be gone), or
        # `flywheel up` started it again.
        if component.stopping_file.exists() or not component.pid_file.exists() or component.pid():
            return
        try:
            pid = component.spawn()
        except Exception as error:  # a failed start is one more crash: back off further
            log.error("could not restart %s: %s", component.name, error)
            watch.last_exit = f"restart failed: {error}"
            watch.next_attempt = now + self._grow(watch)
            return
        self.children[pid] = component.name
        watch.restarts += 1
        watch.last_restart_at = datetime.now(UTC).isoformat(timespec="seconds")
        watch.state, watch.pid, watch.running_since = "running", pid, now
        watch.next_attempt, watch.next_attempt_in_s = None, None
        self._grow(watch)
        log.warning("restarted %s (pid %d, restart %d)", component.name, pid, watch.restarts)

    def _grow(self, watch: Watch) -> float:
        watch.backoff_s = min(watch.backoff_s * 2 or self.settings.supervisor_backoff_s,
                              self.settings.supervisor_max_backoff_s)
        return watch.backoff_s

    def _reap(self) -> None:
        """Collect the services we restarted once they exit (no zombies), noting how they ended."""
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            if self.children.pop(pid, None) is not None:
                self.exits[pid] = _describe(status)

    def write(self) -> None:
        report = {
            "pid": os.getpid(),
            "heartbeat": time.time(),
            "services": {name: watch.public() for name, watch in self.watches.items()},
        }
        path = state_file(self.settings)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(report, indent=2))
        tmp.replace(path)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


class SupervisorComponent(Component):
    """The supervisor as a component of the local stack: started last, stopped first."""

    name = "supervisor"

    @property
    def url(self) -> str:
        return str(state_file(self.settings))

    def command(self) -> list[str]:
        return [sys.executable, "-m", "infra.supervisor"]

    def cwd(self) -> Path:
        return REPO_ROOT

    def check(self) -> Health:
        state = read_state(self.settings)
        age = time.time() - float(state.get("heartbeat", 0))
        if state.get("pid") != self.pid() or age > STALE_AFTER_S:
            return Health(False, "not watching (no recent report)")
        services = state.get("services", {})
        total = sum(int(w.get("restarts", 0)) for w in services.values())
        down = sorted(name for name, w in services.items() if w.get("state") == "backoff")
        detail = f"watching {len(services)} services, {total} restart(s)"
        if down:
            detail += f"; restarting: {', '.join(down)}"
        return Health(True, detail)

    def stop(self, timeout_s: float | None = None) -> None:
        super().stop(timeout_s or 10.0)


def main() -> None:
    from infra.stack import service_components

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    with contextlib.suppress(FileNotFoundError):
        state_file(settings).unlink()
    Supervisor(settings, service_components(settings), refresh=lambda: service_components(settings)).run()


if __name__ == "__main__":
    main()
