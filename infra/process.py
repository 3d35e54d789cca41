"""A local process managed by PID file: idempotent start, readiness wait, stop by PID.

A PID file records the process's identity as well as its PID: its start time (in clock ticks
since boot, /proc/<pid>/stat), the boot it belongs to and its command line. The PID is trusted
only while a live process matches all three, so a stale file (after a reboot or a crash, the
PID reused by an unrelated program) is never signalled.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from core.config import Settings
from gateway.readiness import Health


class PrerequisiteMissing(RuntimeError):
    """A program the local stack needs is not installed."""


class StartupFailed(RuntimeError):
    """A component did not become ready in time."""


__all__ = ["Component", "Health", "PrerequisiteMissing", "StartupFailed", "pid_alive", "require_program",
           "start_overlapped"]


def require_program(program: str, how_to_install: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise PrerequisiteMissing(f"'{program}' is not on PATH. Install it: {how_to_install}")
    return path


@dataclass(frozen=True)
class ProcessIdentity:
    """What tells one process from another that later got the same PID."""

    pid: int
    start_ticks: int
    boot_id: str
    cmdline: tuple[str, ...]

    @classmethod
    def of(cls, pid: int) -> ProcessIdentity | None:
        """The live (not zombie) process `pid` as /proc shows it; None when there is none."""
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as raw:
                cmdline = tuple(arg.decode(errors="replace") for arg in raw.read().split(b"\0")[:-1])
        except (OSError, IndexError):
            return None
        # fields[0] is the state (field 3 of stat(5)); the start time is field 22.
        if fields[0] in ("Z", "X"):
            return None
        return cls(pid, int(fields[19]), boot_id(), cmdline)

    def to_json(self) -> str:
        return json.dumps({"pid": self.pid, "start_ticks": self.start_ticks, "boot_id": self.boot_id,
                           "cmdline": list(self.cmdline)})

    @classmethod
    def from_json(cls, text: str) -> ProcessIdentity:
        data = json.loads(text)
        return cls(int(data["pid"]), int(data["start_ticks"]), str(data["boot_id"]),
                   tuple(str(arg) for arg in data["cmdline"]))


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


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

    @property
    def stopping_file(self) -> Path:
        """Present while `stop` runs: the process is going away on purpose (no restart)."""
        return self.settings.run_dir / f"{self.name}.stopping"

    def pid(self) -> int | None:
        """The PID of our running process: the PID file's, if a live process still matches the
        identity recorded when we started it; None otherwise (never started, exited, or stale)."""
        try:
            text = self.pid_file.read_text().strip()
        except OSError:
            return None
        try:
            recorded = ProcessIdentity.from_json(text)
        except (ValueError, KeyError, TypeError):
            return self._legacy_pid(text)
        current = ProcessIdentity.of(recorded.pid)
        if current is None:
            return None
        # A process still in exec() shows an empty command line for a moment (Popen can return
        # before the kernel has set it): the start time and boot already tell it apart.
        same = (current.start_ticks, current.boot_id) == (recorded.start_ticks, recorded.boot_id)
        return recorded.pid if same and current.cmdline in ((), recorded.cmdline) else None

    def _legacy_pid(self, text: str) -> int | None:
        """A bare PID written by an older version: trusted only when that process runs our
        program (same executable as our command)."""
        try:
            pid = int(text)
            program = self.command()[0]
        except (ValueError, IndexError, PrerequisiteMissing, OSError):
            return None
        current = ProcessIdentity.of(pid)
        return pid if current is not None and current.cmdline[:1] == (program,) else None

    def spawn(self) -> int:
        """Start the process in the background and record its identity; returns its PID.

        Under a lock per component, so `flywheel up` and the supervisor never both start one:
        whoever comes second finds it running and gets its PID."""
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        self.settings.logs_dir.mkdir(parents=True, exist_ok=True)
        with open(self.settings.run_dir / f"{self.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            running = self.pid()
            if running is not None:
                return running
            self.prepare()
            env = {**os.environ, **self.settings.to_env(), **self.environment()}
            command = self.command()
            with open(self.log_file, "ab") as log:
                process = subprocess.Popen(
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    cwd=self.cwd(),
                    user=self.run_as(),
                    start_new_session=True,
                )
            # The start time is the fork's. Popen may return before the kernel has set the new
            # program's arguments, so the command line recorded is the one we exec'd.
            identity = ProcessIdentity.of(process.pid)
            if identity is not None:
                identity = replace(identity, cmdline=tuple(command))
            tmp = self.pid_file.with_suffix(".pid.tmp")
            tmp.write_text(identity.to_json() if identity else str(process.pid))
            tmp.replace(self.pid_file)
            return process.pid

    def start(self) -> None:
        self.finish_start(self.begin_start())

    def begin_start(self) -> bool:
        """Spawn the process unless ours already runs; True when this call spawned it."""
        if self.pid() is not None:
            return False
        self.spawn()
        return True

    def finish_start(self, spawned: bool) -> None:
        """Wait until ready; a process `begin_start` just spawned also gets `after_start`."""
        self.wait_ready()
        if spawned:
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
        """Stop our process (and its process group) by PID; a stale PID file is only removed."""
        timeout_s = timeout_s or 30.0
        pid = self.pid()
        if pid is not None:
            self.stopping_file.touch()
            try:
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
            finally:
                self.stopping_file.unlink(missing_ok=True)
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


def start_overlapped(
    components: Sequence[Component],
    needs: Mapping[str, Collection[str]],
    on_started: Callable[[Component], None] | None = None,
) -> None:
    """Start `components` with their start-ups overlapping: each is spawned as soon as the
    components it needs (`needs[name]`, those among `components`) are ready, and they are
    waited for in the order given. A component that needs nothing does not wait for the
    slowest one before it (Triton loading its models while Kafka formats its log)."""
    names = {c.name for c in components}
    pending = list(components)
    spawned: list[tuple[Component, bool]] = []
    ready: set[str] = set()
    while pending or spawned:
        for component in list(pending):
            if set(needs.get(component.name, ())) & names <= ready:
                spawned.append((component, component.begin_start()))
                pending.remove(component)
        if not spawned:
            blocked = {c.name: sorted(set(needs.get(c.name, ())) - ready) for c in pending}
            raise ValueError(f"components waiting on each other: {blocked}")
        component, fresh = spawned.pop(0)
        component.finish_start(fresh)
        ready.add(component.name)
        if on_started is not None:
            on_started(component)


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
