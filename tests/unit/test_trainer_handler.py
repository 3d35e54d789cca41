"""The training run state machine over fakes: gate, idempotency, rejection, failure, resume."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from consumers.trainer.handlers import TrainerConfig, TrainerDeps, handle_training_request
from core.ports import DependencyUnavailable
from core.training.dataset import DatasetStats, EvalQuery, Example, TrainingDataset
from schemas.training import TrainingRequested
from tests.unit.training_fakes import FakeDatasets, FakeRegistry, FakeTasks, FakeTrainer, Published


def dataset(sessions: int = 50) -> TrainingDataset:
    return TrainingDataset(
        triples=[Example("q", "p", "n")], pairs=[Example("r", "s")],
        eval_queries=[EvalQuery("default", "q", frozenset({"a"}))], pools={"default": {"a": "A"}},
        stats=DatasetStats(sessions=sessions, sessions_with_clicks=sessions, train_sessions=sessions - 10,
                           eval_sessions=10, pairs=2, triples=1, eval_queries=1),
    )


def make_deps(tmp_path: Path, trainer: FakeTrainer, data: TrainingDataset | None = None,
              active: str | None = "1") -> tuple[TrainerDeps, FakeTasks, FakeRegistry, Published]:
    base = tmp_path / "base"
    base.mkdir(exist_ok=True)
    tasks, registry, published = FakeTasks(), FakeRegistry(base), Published()

    async def active_version() -> str | None:
        return active

    config = TrainerConfig(base_model_dir=base, work_dir=tmp_path / "work", progress_interval_s=0.01)
    deps = TrainerDeps(tasks, FakeDatasets(data or dataset()), trainer, registry, active_version, published,
                       config)
    return deps, tasks, registry, published


def request(**kw: object) -> TrainingRequested:
    return TrainingRequested(**{"run_id": "run-1", "min_sessions": 10, **kw})  # type: ignore[arg-type]


async def test_a_better_candidate_is_registered_and_published(tmp_path: Path) -> None:
    deps, tasks, registry, published = make_deps(tmp_path, FakeTrainer(0.4, 0.6))
    task = await handle_training_request(request(), deps)
    assert task["status"] == "succeeded" and task["stage"] == "published" and task["progress"] == 1.0
    [event] = published.events
    assert (event.model_version, event.registry_version, event.base_version) == ("2", 1, "1")
    assert event.metrics["candidate_ndcg_at_10"] == 0.6 and event.metrics["base_ndcg_at_10"] == 0.4
    # The weight the candidate's evaluation chose travels with the version; query counts and the
    # score at each weight do not (MLflow keeps them).
    assert event.fusion_weight == 0.3 and event.metrics["candidate_hybrid_ndcg_at_10"] == 0.65
    assert not any(name.endswith("_queries") or "_at_0" in name for name in event.metrics)
    assert event.run_id == "run-1" and event.artifact_uri.startswith("mlflow-artifacts:/")
    [run] = registry.runs.values()
    assert run["status"] == "FINISHED" and run["tags"]["gate"] == "passed"
    assert run["metrics"]["dataset_sessions"] == 50 and run["params"]["epochs"] == 1
    assert task["links"]["mlflow_run"].startswith("http://mlflow/")
    stages = [h["stage"] for h in tasks.history if "stage" in h]
    assert stages == ["building-dataset", "building-dataset", "training", "evaluating", "registering",
                      "published"]
    assert task["details"]["metrics"]["base"]["ndcg_at_10"] == 0.4
    assert not (tmp_path / "work" / "runs" / "run-1").exists()  # candidate files cleaned up


@pytest.mark.parametrize(("asked", "trained"), [
    ({}, ("linear-map", 5, True)),  # the trainer's recipe, for its map epochs, with the corpus
    ({"recipe": "fine-tune"}, ("fine-tune", 1, False)),
    ({"recipe": "linear-map", "epochs": 2}, ("linear-map", 2, True)),
    ({"epochs": 7}, ("linear-map", 7, True)),
])
async def test_a_request_names_its_recipe_and_epochs_or_takes_the_trainers(
    tmp_path: Path, asked: dict[str, object], trained: tuple[str, int, bool],
) -> None:
    trainer = FakeTrainer(0.4, 0.6)
    deps, _, registry, _ = make_deps(tmp_path, trainer)
    deps.config = replace(deps.config, recipe="linear-map", map_epochs=5)
    task = await handle_training_request(request(**asked), deps)
    recipe, epochs, corpus = trained
    [config] = trainer.configs
    assert (config.recipe, config.epochs) == (recipe, epochs)
    assert deps.datasets.calls[-1]["corpus"] is corpus  # type: ignore[attr-defined]
    assert (task["details"]["recipe"], task["details"]["epochs"]) == (recipe, epochs)
    # The task records what was asked (None: the trainer's default), and a retry sends that again.
    assert task["details"]["request"]["recipe"] == asked.get("recipe")
    [run] = registry.runs.values()
    assert (run["params"]["recipe"], run["params"]["epochs"]) == (recipe, epochs)


async def test_a_redelivered_request_does_not_train_twice(tmp_path: Path) -> None:
    trainer = FakeTrainer(0.4, 0.6)
    deps, _, registry, published = make_deps(tmp_path, trainer)
    await handle_training_request(request(), deps)
    task = await handle_training_request(request(), deps)
    assert trainer.trained == 1 and len(published.events) == 1 and len(registry.versions) == 1
    assert task["status"] == "succeeded"


async def test_the_gate_rejects_and_keeps_both_scores(tmp_path: Path) -> None:
    deps, _, registry, published = make_deps(tmp_path, FakeTrainer(0.5, 0.5))
    task = await handle_training_request(request(), deps)
    assert task["status"] == "rejected" and task["stage"] == "rejected"
    assert task["details"]["metrics"]["base"]["ndcg_at_10"] == 0.5
    assert task["details"]["metrics"]["candidate"]["ndcg_at_10"] == 0.5
    assert "does not beat" in task["error"]
    assert published.events == [] and registry.versions == []
    assert next(iter(registry.runs.values()))["tags"]["gate"] == "rejected"


async def test_a_margin_rejects_a_slightly_better_candidate(tmp_path: Path) -> None:
    deps, _, _, published = make_deps(tmp_path, FakeTrainer(0.5, 0.55))
    task = await handle_training_request(request(gate_margin=0.1), deps)
    assert task["status"] == "rejected" and published.events == []


async def test_too_few_sessions_is_rejected_without_training(tmp_path: Path) -> None:
    trainer = FakeTrainer(0.4, 0.6)
    deps, _, registry, published = make_deps(tmp_path, trainer, dataset(sessions=5))
    task = await handle_training_request(request(), deps)
    assert task["status"] == "rejected" and "too few sessions" in task["error"]
    assert trainer.trained == 0 and registry.runs == {} and published.events == []


async def test_a_training_error_fails_the_task(tmp_path: Path) -> None:
    deps, _, registry, published = make_deps(tmp_path, FakeTrainer(0.4, 0.6, fail=RuntimeError("CUDA OOM")))
    task = await handle_training_request(request(), deps)
    assert task["status"] == "failed" and task["stage"] == "training"
    assert task["error"] == "RuntimeError: CUDA OOM"
    assert next(iter(registry.runs.values()))["status"] == "FAILED" and published.events == []


async def test_fine_tunes_the_active_version(tmp_path: Path) -> None:
    deps, _, _, published = make_deps(tmp_path, FakeTrainer(0.4, 0.6), active="3")
    await handle_training_request(request(), deps)
    assert published.events[0].base_version == "3"


async def test_a_crash_after_registering_only_publishes_again(tmp_path: Path) -> None:
    trainer = FakeTrainer(0.4, 0.6)
    deps, tasks, _, published = make_deps(tmp_path, trainer)
    await handle_training_request(request(), deps)
    # As if the process died between recording the event and finishing the task.
    tasks.tasks["run-1"]["status"] = "running"
    task = await handle_training_request(request(), deps)
    assert trainer.trained == 1 and task["status"] == "succeeded"
    assert [e.event_id for e in published.events] == [published.events[0].event_id] * 2


class CrashWhileRecording(FakeTasks):
    """The process dies after the version was registered, before the task recorded it."""

    def __init__(self) -> None:
        super().__init__()
        self.crashed = False

    async def update(self, task_id: str, **fields: object) -> dict[str, object] | None:
        if "details.published_event" in fields and not self.crashed:
            self.crashed = True
            raise SystemExit("killed between registering and recording")
        return await super().update(task_id, **fields)


async def test_a_crash_between_registering_and_recording_registers_one_version(tmp_path: Path) -> None:
    trainer = FakeTrainer(0.4, 0.6)
    deps, _, registry, published = make_deps(tmp_path, trainer)
    deps.tasks = tasks = CrashWhileRecording()
    with pytest.raises(SystemExit):
        await handle_training_request(request(), deps)
    assert len(registry.versions) == 1 and published.events == []
    assert tasks.tasks["run-1"]["status"] == "running"  # as the crash left it

    task = await handle_training_request(request(), deps)  # the request, redelivered
    assert task["status"] == "succeeded" and task["stage"] == "published"
    assert trainer.trained == 1 and len(registry.versions) == 1  # neither trained nor registered again
    [event] = published.events
    assert (event.registry_version, event.model_version, event.base_version) == (1, "2", "1")
    assert event.artifact_uri == registry.versions[0]["source"]
    assert event.metrics["candidate_ndcg_at_10"] == 0.6 and event.metrics["base_ndcg_at_10"] == 0.4
    assert registry.runs[registry.versions[0]["run"]]["status"] == "FINISHED"  # the run left open is closed
    assert task["details"]["registry_version"] == 1


@pytest.mark.parametrize("status", ["pending", "running"])
async def test_an_unfinished_task_runs(tmp_path: Path, status: str) -> None:
    deps, tasks, _, _ = make_deps(tmp_path, FakeTrainer(0.4, 0.6))
    await tasks.create("run-1", "training", "default")
    tasks.tasks["run-1"]["status"] = status
    assert (await handle_training_request(request(), deps))["status"] == "succeeded"


class DownRegistry(FakeRegistry):
    """MLflow down for the first `outages` runs started."""

    def __init__(self, base_dir: Path, outages: int) -> None:
        super().__init__(base_dir)
        self.outages = outages

    def start_run(self, run_name: str, tags: dict[str, str]) -> str:
        if self.outages:
            self.outages -= 1
            raise DependencyUnavailable("MLflow is unavailable: connection refused")
        return super().start_run(run_name, tags)


async def test_mlflow_down_leaves_the_task_waiting_and_the_retry_finishes_it(tmp_path: Path) -> None:
    trainer = FakeTrainer(0.4, 0.6)
    deps, tasks, _, published = make_deps(tmp_path, trainer)
    deps.registry = registry = DownRegistry(tmp_path / "base", outages=2)
    for _ in range(2):
        with pytest.raises(DependencyUnavailable):
            await handle_training_request(request(), deps)
        task = tasks.tasks["run-1"]
        assert (task["status"], task["stage"]) == ("pending", "waiting")
        assert "MLflow is unavailable" in task["error"] and published.events == []
    task = await handle_training_request(request(), deps)
    assert task["status"] == "succeeded" and task["error"] is None
    assert trainer.trained == 1 and len(registry.versions) == 1 and len(published.events) == 1


def test_mlflow_connection_failures_are_told_apart_from_its_answers() -> None:
    from mlflow.exceptions import MlflowException

    from core.adapters.mlflow_registry import is_unreachable

    refused = MlflowException("API request to http://127.0.0.1:5/api/2.0/mlflow/runs/create failed with "
                              "exception HTTPConnectionPool(host='127.0.0.1', port=5): Max retries exceeded")
    assert is_unreachable(refused) and is_unreachable(ConnectionRefusedError())
    assert not is_unreachable(MlflowException("RESOURCE_DOES_NOT_EXIST: Run 'x' not found"))
    assert not is_unreachable(ValueError("bad"))


def counted(metric: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


async def test_runs_and_gate_decisions_are_counted_once(tmp_path: Path) -> None:
    before = (counted("flywheel_training_runs_total", outcome="succeeded"),
              counted("flywheel_training_gate_total", decision="passed"),
              counted("flywheel_training_runs_total", outcome="rejected"),
              counted("flywheel_training_gate_total", decision="rejected"))
    deps, *_ = make_deps(tmp_path, FakeTrainer(0.4, 0.6))
    await handle_training_request(request(), deps)
    await handle_training_request(request(), deps)  # redelivered: already final, not counted again
    rejecting, *_ = make_deps(tmp_path, FakeTrainer(0.5, 0.5))
    await handle_training_request(request(run_id="run-2"), rejecting)
    after = (counted("flywheel_training_runs_total", outcome="succeeded"),
             counted("flywheel_training_gate_total", decision="passed"),
             counted("flywheel_training_runs_total", outcome="rejected"),
             counted("flywheel_training_gate_total", decision="rejected"))
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1, 1]


class FakeJudgments:
    def __init__(self, datasets: dict[tuple[str, str], list[dict[str, object]]]) -> None:
        self.datasets = datasets

    async def judgments_of(self, tenant: str, name: str) -> list[dict[str, object]] | None:
        return self.datasets.get((tenant, name))


async def test_uploaded_datasets_train_and_evaluate_without_the_sessions_minimum(tmp_path: Path) -> None:
    deps, _, _, published = make_deps(tmp_path, FakeTrainer(0.4, 0.6), dataset(sessions=0))
    deps.judgments = FakeJudgments({
        ("acme", "golden"): [{"query": "q", "item_id": "a", "grade": 2.0}, {"query": "q", "item_id": "b"}],
        ("acme", "held"): [{"query": "r", "item_id": "c", "grade": 0.0}],
    })
    task = await handle_training_request(
        request(tenant="acme", datasets=["golden"], eval_dataset="held", use_sessions=False), deps)
    assert task["status"] == "succeeded", task  # 0 sessions, but min_sessions guards sessions only
    [call] = deps.datasets.calls  # type: ignore[attr-defined]
    assert call["tenant"] == "acme" and call["use_sessions"] is False
    assert [(j.query, j.item_id, j.grade) for j in call["judged"]] == [("q", "a", 2.0), ("q", "b", 1.0)]
    assert [(j.item_id, j.grade) for j in call["held_out"]] == [("c", 0.0)]
    assert task["details"]["request"]["datasets"] == ["golden"] and len(published.events) == 1


async def test_a_dataset_the_tenant_does_not_have_rejects_the_run(tmp_path: Path) -> None:
    deps, _, registry, published = make_deps(tmp_path, FakeTrainer(0.4, 0.6))
    # Another tenant's dataset of that name is not this tenant's.
    deps.judgments = FakeJudgments({("other", "golden"): [{"query": "q", "item_id": "a"}]})
    task = await handle_training_request(request(tenant="acme", datasets=["golden"]), deps)
    assert task["status"] == "rejected" and "dataset 'golden'" in task["error"]
    assert deps.datasets.builds == 0 and published.events == [] and registry.versions == []  # type: ignore[attr-defined]
