"""A local process managed by PID file: idempotent start, readiness wait, stop by PID."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from core.config import Settings


class PrerequisiteMissing(RuntimeError):
    """A program the local stack needs is not installed."""


class StartupFailed(RuntimeError):
    """A component did not become ready in time."""


@dataclass(frozen=True)
class Health:
    healthy: bool
    detail: str


def require_program(program: str, how_to_install: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise PrerequisiteMissing(f"'{program}' is not on PATH. Install it: {how_to_install}")
    return path


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


class Component(ABC):
    """One real program of the stack, run as a background process of its own session."""

    name: str

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # --- what each component defines -------------------------------------------------
    @property
    @abstractmethod
    def url(self) -> str: ...

    @abstractmethod
    def command(self) -> list[str]: ...

    @abstractmethod
    def check(self) -> Health:
        """A readiness probe that talks to the component itself."""

    def prepare(self) -> None:
        """Install tools and initialise state; must be idempotent."""

    def after_start(self) -> None:
        """Runs once the component is ready (e.g. create topics)."""

    def environment(self) -> dict[str, str]:
        return {}

    def cwd(self) -> Path | None:
        return None

    def run_as(self) -> str | None:
        """A system user to run as (PostgreSQL refuses to run as root)."""
        return None

    stop_signal: signal.Signals = signal.SIGTERM

    # --- lifecycle ----------------------------------------------------------------------
    @property
    def pid_file(self) -> Path:
        return self.settings.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.settings.logs_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def start(self) -> None:
        if self.pid() is not None:
            self.wait_ready()
            return
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        self.settings.logs_dir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        env = {**os.environ, **self.settings.to_env(), **self.environment()}
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.cwd(),
                user=self.run_as(),
                start_new_session=True,
            )
        self.pid_file.write_text(str(process.pid))
        self.wait_ready()
        self.after_start()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.settings.startup_timeout_s
        health = Health(False, "not checked")
        while time.monotonic() < deadline:
            if self.pid() is None:
                raise StartupFailed(
                    f"{self.name} exited during start-up; see {self.log_file}:\n{self._log_tail()}"
                )
            health = self.check()
            if health.healthy:
                return
            time.sleep(0.5)
        raise StartupFailed(
            f"{self.name} not ready after {self.settings.startup_timeout_s:.0f}s "
            f"({health.detail}); see {self.log_file}:\n{self._log_tail()}"
        )

    def stop(self, timeout_s: float | None = None) -> None:
        timeout_s = timeout_s or 30.0
        pid = self.pid()
        if pid is not None:
            _signal_group(pid, self.stop_signal)
            deadline = time.monotonic() + timeout_s
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if pid_alive(pid):
                _signal_group(pid, signal.SIGKILL)
                while pid_alive(pid):
                    time.sleep(0.1)
            # Children of the component (e.g. Triton's Python stubs) share its session.
            _signal_group(pid, signal.SIGKILL)
            _reap(pid)
        self.pid_file.unlink(missing_ok=True)

    def status(self) -> dict[str, object]:
        pid = self.pid()
        health = self.check() if pid is not None else Health(False, "not running")
        return {
            "name": self.name,
            "url": self.url,
            "pid": pid,
            "healthy": health.healthy,
            "detail": health.detail,
        }

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _reap(pid: int) -> None:
    """Collect the exit status when the component is our own child, so no zombie stays."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
