"""Cancelling and retrying tasks: the state rules, and each worker stopping over fakes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from consumers.deployer.handlers import deploy
from consumers.reindexer.handlers import reindex
from consumers.trainer.handlers import handle_training_request
from core.task_control import (
    FINAL_STATUSES,
    STATUSES,
    TaskCancelled,
    cancel_refusal,
    cancel_requested,
    retry_refusal,
    stop_if_cancelled,
)
from core.training.dataset import TrainingDataset
from core.training.finetune import FineTuneConfig
from core.training.runtime import Progress, TrainingResult
from schemas.reindex import ReindexRequested
from tests.unit.test_rollout_handlers import DeployRig, ReindexRig, published
from tests.unit.test_trainer_handler import make_deps, request
from tests.unit.training_fakes import FakeTasks, FakeTrainer


# --- the rules ------------------------------------------------------------------------------------
@pytest.mark.parametrize("status", STATUSES)
def test_only_pending_and_running_tasks_can_be_cancelled(status: str) -> None:
    refusal = cancel_refusal({"id": "t", "status": status})
    assert (refusal is None) == (status in ("pending", "running"))
    if refusal:
        assert status in refusal and "'t'" in refusal


@pytest.mark.parametrize("status", STATUSES)
def test_only_failed_and_cancelled_tasks_can_be_retried(status: str) -> None:
    refusal = retry_refusal({"id": "t", "status": status})
    assert (refusal is None) == (status in ("failed", "cancelled"))


def test_cancelled_is_final_and_a_request_to_cancel_stops_the_worker() -> None:
    assert "cancelled" in FINAL_STATUSES and "running" not in FINAL_STATUSES
    assert not cancel_requested({"id": "t", "status": "running"}) and not cancel_requested(None)
    stop_if_cancelled({"id": "t", "status": "running"})
    for task in ({"id": "t", "status": "running", "cancel_requested_at": "2026-01-01T00:00:00Z"},
                 {"id": "t", "status": "cancelled"}):
        with pytest.raises(TaskCancelled):
            stop_if_cancelled(task)


# --- the trainer ----------------------------------------------------------------------------------
class CancelledMidway(FakeTrainer):
    """Trains `steps` optimizer steps; after the second one an admin cancels the run (the
    reporter sees it), and the trainer must stop at the next step."""

    def __init__(self, tasks: FakeTasks, steps: int = 1000) -> None:
        super().__init__(0.4, 0.6)
        self.tasks = tasks
        self.steps = steps
        self.done = 0

    def fine_tune(self, base_dir: Path, out_dir: Path, data: TrainingDataset, config: FineTuneConfig,
                  progress: Progress | None = None) -> TrainingResult:
        import time

        assert progress is not None
        for step in range(1, self.steps + 1):
            if step == 2:
                self.tasks.tasks["run-1"]["cancel_requested_at"] = "now"
            time.sleep(0.005)
            self.done = step
            progress(step, self.steps)
        raise AssertionError("training was not stopped")


async def test_a_running_training_stops_within_steps_and_registers_nothing(tmp_path: Path) -> None:
    deps, tasks, registry, published_events = make_deps(tmp_path, FakeTrainer(0.4, 0.6))
    trainer = CancelledMidway(tasks)
    deps.trainer = trainer
    task = await handle_training_request(request(), deps)
    assert task["status"] == "cancelled" and task["stage"] == "training", task
    assert trainer.done < trainer.steps
    assert registry.versions == [] and published_events.events == []
    [run] = registry.runs.values()
    assert run["status"] == "KILLED" and run["tags"]["gate"] == "cancelled"
    assert not (tmp_path / "work" / "runs" / "run-1").exists()


async def test_a_pending_training_cancelled_is_skipped_when_its_request_arrives(tmp_path: Path) -> None:
    deps, tasks, registry, published_events = make_deps(tmp_path, FakeTrainer(0.4, 0.6))
    await tasks.create("run-1", "training", "default")
    tasks.tasks["run-1"].update(status="cancelled", stage="cancelled")
    for _ in range(2):  # delivered twice: skipped twice
        task = await handle_training_request(request(), deps)
        assert task["status"] == "cancelled" and task["stage"] == "cancelled"
    assert deps.datasets.builds == 0 and registry.runs == {} and published_events.events == []  # type: ignore[attr-defined]


async def test_a_run_asked_to_stop_before_a_restart_ends_cancelled_without_training(tmp_path: Path) -> None:
    deps, tasks, registry, _ = make_deps(tmp_path, FakeTrainer(0.4, 0.6))
    await tasks.create("run-1", "training", "default")
    tasks.tasks["run-1"].update(status="running", stage="training", cancel_requested_at="then")
    task = await handle_training_request(request(), deps)
    assert task["status"] == "cancelled" and registry.runs == {}


# --- the reindexer --------------------------------------------------------------------------------
class CancellingTasks:
    """Asks to cancel `task_id` once the worker reports `after_updates` more updates."""

    def __init__(self, tasks: Any, task_id: str, after_updates: int) -> None:
        self.inner, self.task_id, self.left = tasks, task_id, after_updates

    async def create(self, *args: Any, **kw: Any) -> Any:
        return await self.inner.create(*args, **kw)

    async def update(self, task_id: str, **fields: Any) -> Any:
        self.left -= 1
        if self.left == 0:
            self.inner.tasks[self.task_id]["cancel_requested_at"] = "now"
        return await self.inner.update(task_id, **fields)


async def test_a_cancelled_reindex_stops_between_batches_and_the_active_version_serves() -> None:
    rig = ReindexRig()
    for i in range(12):
        rig.log.upsert("a", f"doc{i}", f"text number {i}", 1)
    await rig.live_index()
    deps = rig.deps()
    deps.tasks = CancellingTasks(rig.tasks, "reindex-2", after_updates=4)  # type: ignore[assignment]
    task = await reindex(ReindexRequested(model_version="2"), deps)
    assert task["status"] == "cancelled" and task["stage"] == "backfilling", task
    assert await rig.store.active_version() == "1"
    assert rig.store.status["2"] == "failed" and "cancelled" in rig.store.reasons["2"]
    assert len(rig.store.chunks["2"]) < 12  # stopped before the end of the replay
    # Its request delivered again changes nothing.
    again = await reindex(ReindexRequested(model_version="2"), rig.deps())
    assert again["status"] == "cancelled" and await rig.store.active_version() == "1"


# --- the deployer ---------------------------------------------------------------------------------
async def test_a_cancelled_deploy_unloads_what_it_placed(tmp_path: Path) -> None:
    rig = DeployRig(tmp_path)
    tasks = CancellingTasks(rig.tasks, "deploy-2", after_updates=5)  # during "loading"
    rig.deps.tasks = tasks  # type: ignore[assignment]
    task = await deploy(published(), rig.deps)
    assert task["status"] == "cancelled", task
    assert not rig.server.has_version(2) and await rig.server.is_ready("1")
    assert rig.published == []  # no reindex requested


async def test_a_pending_deploy_cancelled_is_skipped(tmp_path: Path) -> None:
    rig = DeployRig(tmp_path)
    await rig.tasks.create("deploy-2", "deploy", "default")
    rig.tasks.tasks["deploy-2"]["status"] = "cancelled"
    task = await deploy(published(), rig.deps)
    assert task["status"] == "cancelled" and rig.fetched == [] and not rig.server.has_version(2)
