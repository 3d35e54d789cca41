"""`flywheel up` overlaps start-ups: what is spawned when, what waits for what, and which
components get their `after_start` (only those this `up` spawned)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import Settings
from infra import stack
from infra.process import Component, Health, start_overlapped


class Recorded(Component):
    """A component that runs nothing: it writes what `start_overlapped` asks of it to `log`."""

    def __init__(self, name: str, log: list[str], running: bool = False) -> None:
        super().__init__(Settings())
        self.name = name
        self.log = log
        self.running = running

    @property
    def url(self) -> str:
        return f"fake://{self.name}"

    def command(self) -> list[str]:
        return []

    def check(self) -> Health:
        return Health(True, "ok")

    def begin_start(self) -> bool:
        self.log.append(f"spawn {self.name}")
        return not self.running

    def finish_start(self, spawned: bool) -> None:
        self.log.append(f"ready {self.name}" + (" +after_start" if spawned else ""))


def test_independent_components_are_spawned_before_the_first_is_waited_for() -> None:
    log: list[str] = []
    kafka, triton, connect = (Recorded(n, log) for n in ("kafka", "triton", "connect"))
    start_overlapped([kafka, triton, connect], {"connect": {"kafka"}})
    assert log == ["spawn kafka", "spawn triton", "ready kafka +after_start",
                   "spawn connect", "ready triton +after_start", "ready connect +after_start"]


def test_a_component_already_running_is_waited_for_without_after_start() -> None:
    log: list[str] = []
    started: list[str] = []
    start_overlapped([Recorded("kafka", log, running=True), Recorded("gateway", log)],
                     {"gateway": {"kafka"}}, on_started=lambda c: started.append(c.name))
    assert log == ["spawn kafka", "ready kafka", "spawn gateway", "ready gateway +after_start"]
    assert started == ["kafka", "gateway"]


def test_needs_outside_the_selection_do_not_block() -> None:
    """`flywheel up indexer`: the real components it needs are not started by this `up`."""
    log: list[str] = []
    start_overlapped([Recorded("indexer", log)], {"indexer": {"kafka", "postgres"}})
    assert log == ["spawn indexer", "ready indexer +after_start"]


def test_components_waiting_on_each_other_are_an_error() -> None:
    log: list[str] = []
    with pytest.raises(ValueError, match="waiting on each other"):
        start_overlapped([Recorded("a", log), Recorded("b", log)], {"a": {"b"}, "b": {"a"}})
    assert log == []


def test_the_stack_starts_services_after_every_real_component_and_the_supervisor_last(
    tmp_path: Path,
) -> None:
    settings = Settings(state_dir=tmp_path)
    components = stack.all_components(settings)
    needs = stack.start_needs(components)
    real = {c.name for c in stack.dependency_components(settings)}
    assert needs["connect"] == {"kafka"}
    assert all(needs[c.name] == real for c in stack.service_components(settings))
    assert needs["supervisor"] == {c.name for c in components} - {"supervisor"}
    assert not any(needs.get(name) for name in real - {"connect"})
