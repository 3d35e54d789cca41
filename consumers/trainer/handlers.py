"""A training run, as a state machine recorded in the MongoDB task whose id is the run id.

    pending -> running: building-dataset -> training -> evaluating
            -> registering -> succeeded (stage "published")
            -> rejected (too few sessions, or the gate: both scores kept)
            -> failed (the error kept)
            -> cancelled (core.task_control: a pending run's request is skipped; a running one
               stops at its next stage or optimizer step, ends its MLflow run KILLED and
               registers nothing)
    -> pending (stage "waiting"): a dependency (MLflow, MongoDB, PostgreSQL) is down; the
       error is raised to the consumer, which retries the request after a pause

Idempotent per run id: a request whose task is final changes nothing, so a redelivered
request never trains twice. A task left running by a crash is run again; if it had passed
the gate and been registered, only its `model-published` event is sent again. Before it
trains, a run asks the registry for a version already registered for its run id (a crash
between registering and recording leaves one): that version is announced, nothing is trained
or registered again, so a run registers at most one version and publishes at most once.

Blocking work (fine-tuning, evaluation, MLflow) runs in worker threads: the event loop keeps
serving health checks and Kafka heartbeats meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.domain import RegisteredModel
from core.fusion import is_weight_metric
from core.metrics import GATE_DECISIONS, TRAINING_RUNS
from core.ports import Datasets, DependencyUnavailable, Judgments, ModelRegistry, ModelTrainer, Tasks
from core.serving import BASE_SERVING_VERSION, serving_version
from core.task_control import FINAL_STATUSES, TaskCancelled, cancel_requested, stop_if_cancelled
from core.training.dataset import DatasetStats, Judged, TrainingDataset
from core.training.finetune import FineTuneConfig
from core.training.gate import decide
from core.training.linear_map import LinearMapConfig
from core.training.metrics import prefixed
from core.training.runtime import TrainingResult
from schemas.model_published import ModelPublished
from schemas.training import Recipe, TrainingRequested

log = logging.getLogger("flywheel.trainer")

# Every outcome is a series from the start: a dashboard shows 0 runs, not "no data".
for _outcome in FINAL_STATUSES:
    TRAINING_RUNS.labels(_outcome)
for _decision in ("passed", "rejected"):
    GATE_DECISIONS.labels(_decision)

# Share of the task's progress each stage ends at.
PROGRESS = {"building-dataset": 0.05, "training": 0.85, "evaluating": 0.95, "registering": 1.0}


@dataclass(frozen=True)
class TrainerConfig:
    base_model_dir: Path
    work_dir: Path
    batch_size: int = 32
    mini_batch_size: int = 8
    learning_rate: float = 2e-5
    warmup_fraction: float = 0.1
    seed: int = 42
    progress_interval_s: float = 1.0
    recipe: Recipe = "fine-tune"  # for a request that names none
    map_epochs: int = LinearMapConfig.epochs  # a linear-map run's epochs when the request names none


@dataclass
class TrainerDeps:
    tasks: Tasks
    datasets: Datasets
    trainer: ModelTrainer
    registry: ModelRegistry
    active_version: Callable[[], Awaitable[str | None]]
    publish: Callable[[ModelPublished], Awaitable[None]]
    config: TrainerConfig
    # Errors of a dependency that is down: the request is retried, the task is not final.
    is_transient: Callable[[BaseException], bool] = lambda error: isinstance(error, DependencyUnavailable)
    # The tenants' uploaded datasets (requests naming none need none).
    judgments: Judgments | None = None


class Rejected(Exception):
    """The run ends without a candidate: not enough data."""


async def handle_training_request(request: TrainingRequested, deps: TrainerDeps) -> dict[str, Any]:
    """Carry out one training request; returns the task as it ends (or as found, if final)."""
    run_id = request.run_id
    details = {"request": request.request_details()}
    task, _ = await deps.tasks.create(run_id, "training", request.tenant, details)
    if task["status"] in FINAL_STATUSES:
        log.info("training run %s is already %s: nothing to do", run_id, task["status"])
        return task
    if cancel_requested(task):  # asked to stop before a crash or a transient failure
        return await _finish(deps, run_id, status="cancelled", error="cancelled")
    published = (task.get("details") or {}).get("published_event")
    if published:
        # Registered and gated before a crash: only the announcement is missing.
        await deps.publish(ModelPublished.model_validate(published))
        return await _finish(deps, run_id, status="succeeded", stage="published", progress=1.0)
    run = _Run(request, deps, task.get("details") or {})
    try:
        return await run.execute()
    except TaskCancelled:
        log.info("training run %s cancelled at stage %s", run_id, run.stage)
        await run.end_mlflow("KILLED", {"gate": "cancelled"})
        return await _finish(deps, run_id, status="cancelled", stage=run.stage, error="cancelled")
    except Rejected as reason:
        log.info("training run %s rejected: %s", run_id, reason)
        await run.end_mlflow("FINISHED", {"gate": "rejected"})
        return await _finish(deps, run_id, status="rejected", stage="rejected", error=str(reason),
                             **{"details.reason": str(reason)})
    except Exception as error:
        if deps.is_transient(error):
            await run.end_mlflow("FAILED")
            await deps.tasks.update(run_id, status="pending", stage="waiting",
                                    error=f"retrying: {type(error).__name__}: {error}"[:1000])
            raise
        log.exception("training run %s failed", run_id)
        await run.end_mlflow("FAILED")
        return await _finish(deps, run_id, status="failed", stage=run.stage,
                             error=f"{type(error).__name__}: {error}")
    finally:
        run.cleanup()


async def _finish(deps: TrainerDeps, run_id: str, **fields: Any) -> dict[str, Any]:
    task = await deps.tasks.update(run_id, **fields)
    assert task is not None
    if fields.get("status") in FINAL_STATUSES:
        TRAINING_RUNS.labels(fields["status"]).inc()
    return task


class _Run:
    def __init__(self, request: TrainingRequested, deps: TrainerDeps, details: dict[str, Any]) -> None:
        self.request = request
        self.deps = deps
        self.details = details
        self.stage = "queued"
        self.mlflow_run: str | None = None
        self.out_dir = deps.config.work_dir / "runs" / request.run_id

    async def set_stage(self, stage: str, progress: float, **fields: Any) -> None:
        self.stage = stage
        stop_if_cancelled(await self.deps.tasks.update(
            self.request.run_id, status="running", stage=stage, progress=round(progress, 4), **fields))

    async def _judged(self, name: str) -> list[Judged]:
        """The judgments of the tenant's dataset `name`; a run naming a dataset the tenant
        does not have is rejected (final: sending it again changes nothing)."""
        found = None if self.deps.judgments is None else await self.deps.judgments.judgments_of(
            self.request.tenant, name)
        if found is None:
            raise Rejected(f"dataset {name!r}: tenant {self.request.tenant!r} has no such dataset (ready); "
                           f"upload it with POST /v1/datasets or flywheel datasets upload")
        return [Judged(row["query"], row["item_id"], float(row.get("grade", 1.0))) for row in found]

    async def execute(self) -> dict[str, Any]:
        request, deps, cfg = self.request, self.deps, self.deps.config
        registered = await asyncio.to_thread(deps.registry.registered_version, request.run_id)
        if registered is not None:
            return await self._announce_registered(registered)
        await self.set_stage("building-dataset", 0.0, error=None)
        base_version = request.base_version or await deps.active_version() or BASE_SERVING_VERSION
        judged = [j for name in request.datasets for j in await self._judged(name)]
        held_out = await self._judged(request.eval_dataset) if request.eval_dataset else None
        recipe = request.recipe or cfg.recipe
        data = await deps.datasets.build(request.since, request.until, tenant=request.tenant,
                                         use_sessions=request.use_sessions, judged=judged, held_out=held_out,
                                         corpus=recipe == "linear-map")
        stats = data.stats
        await self.set_stage("building-dataset", PROGRESS["building-dataset"], **{
            "details.dataset": stats.as_dict(), "details.base_version": base_version})
        _check_enough(stats, data, request)

        base_dir = await asyncio.to_thread(deps.registry.model_dir, base_version, cfg.base_model_dir)
        self.mlflow_run = await asyncio.to_thread(deps.registry.start_run, f"train-{request.run_id}", {
            "flywheel.run_id": request.run_id, "flywheel.base_version": base_version})
        url = await asyncio.to_thread(deps.registry.run_url, self.mlflow_run)
        epochs = request.epochs or (cfg.map_epochs if recipe == "linear-map" else 1)
        tune = FineTuneConfig(
            epochs, cfg.batch_size, cfg.learning_rate, cfg.warmup_fraction, cfg.seed, cfg.mini_batch_size,
            recipe=recipe)
        await asyncio.to_thread(deps.registry.log, self.mlflow_run, {
            **asdict(tune), "base_version": base_version, "gate_margin": request.gate_margin,
            "min_sessions": request.min_sessions, "since": request.since, "until": request.until,
        }, {f"dataset_{k}": float(v) for k, v in stats.as_dict().items()})
        await asyncio.to_thread(
            deps.registry.log_dict, self.mlflow_run, stats.as_dict(), "dataset_stats.json")

        await self.set_stage("training", PROGRESS["building-dataset"], **{
            "links.mlflow_run": url, "details.recipe": recipe, "details.epochs": epochs})
        result = await self._train(base_dir, data, tune)
        await asyncio.to_thread(deps.registry.log, self.mlflow_run, None, {
            "train_steps": result.steps, "train_seconds": result.seconds, "train_mean_loss": result.mean_loss,
            "train_last_loss": result.last_loss}, {"device": result.device})

        await self.set_stage("evaluating", PROGRESS["training"], **{"details.training": asdict(result)})
        base_metrics = await asyncio.to_thread(deps.trainer.evaluate, base_dir, data)
        candidate = await asyncio.to_thread(deps.trainer.evaluate, self.out_dir, data)
        decision = decide(base_metrics, candidate, request.gate_margin)
        GATE_DECISIONS.labels("passed" if decision.passed else "rejected").inc()
        metrics = {**prefixed(base_metrics, "base"), **prefixed(candidate, "candidate")}
        await asyncio.to_thread(deps.registry.log, self.mlflow_run, None, metrics,
                                {"gate": "passed" if decision.passed else "rejected"})
        scores = {"base": base_metrics, "candidate": candidate, "gate_margin": request.gate_margin}
        if not decision.passed:
            await self.end_mlflow("FINISHED")
            return await _finish(deps, request.run_id, status="rejected", stage="rejected", progress=1.0,
                                 error=decision.reason, **{"details.metrics": scores,
                                                           "details.reason": decision.reason})

        await self.set_stage("registering", PROGRESS["evaluating"], **{"details.metrics": scores})
        artifact_uri = await asyncio.to_thread(deps.registry.log_model_dir, self.mlflow_run, self.out_dir)
        version = await asyncio.to_thread(deps.registry.register, artifact_uri, self.mlflow_run,
                                          request.run_id, {"base_version": base_version})
        event = self._event(version, artifact_uri, metrics, base_version)
        return await self._record_and_publish(event, decision.reason)

    def _event(self, version: int, artifact_uri: str, metrics: dict[str, float], base_version: str
               ) -> ModelPublished:
        return ModelPublished(
            model_version=serving_version(version), registry_version=version,
            metrics={k: v for k, v in metrics.items()
                     if not k.endswith("_queries") and not is_weight_metric(k)},
            fusion_weight=metrics.get("candidate_fusion_weight"),
            artifact_uri=artifact_uri, run_id=self.request.run_id, base_version=base_version,
            tenant=self.request.tenant, source="trainer",
        )

    async def _record_and_publish(self, event: ModelPublished, reason: str) -> dict[str, Any]:
        run_id = self.request.run_id
        # Recorded before it is sent: a crash in between re-sends this very event.
        await self.deps.tasks.update(run_id, **{
            "details.published_event": event.model_dump(mode="json"),
            "details.registry_version": event.registry_version, "details.model_version": event.model_version,
            "details.reason": reason})
        await self.end_mlflow("FINISHED")
        await self.deps.publish(event)
        log.info("training run %s published model version %s (%s)", run_id, event.model_version, reason)
        return await _finish(self.deps, run_id, status="succeeded", stage="published", progress=1.0)

    async def _announce_registered(self, registered: RegisteredModel) -> dict[str, Any]:
        """A crash came between registering and recording: announce the version registered
        then (scores as the task recorded them), without training or registering again."""
        log.warning("training run %s already registered version %d; announcing it without training again",
                    self.request.run_id, registered.version)
        self.stage = "registering"
        self.mlflow_run = registered.mlflow_run_id  # left running by the crash: closed below
        scores = self.details.get("metrics") or {}
        metrics = {**prefixed(scores.get("base") or {}, "base"),
                   **prefixed(scores.get("candidate") or {}, "candidate")}
        base_version = (registered.tags.get("base_version") or self.details.get("base_version")
                        or BASE_SERVING_VERSION)
        event = self._event(registered.version, registered.source, metrics, base_version)
        return await self._record_and_publish(event, f"registered before a restart as version "
                                                     f"{registered.version}")

    async def _train(self, base_dir: Path, data: TrainingDataset, tune: FineTuneConfig) -> TrainingResult:
        latest = {"done": 0, "total": 1}
        stop = threading.Event()

        def progress(done: int, total: int) -> None:  # called from the training thread, each step
            latest.update(done=done, total=total)
            if stop.is_set():
                raise TaskCancelled(f"training run {self.request.run_id} cancelled after step {done}")

        async def report() -> None:
            lo, hi = PROGRESS["building-dataset"], PROGRESS["training"]
            while True:
                await asyncio.sleep(self.deps.config.progress_interval_s)
                share = latest["done"] / max(latest["total"], 1)
                task = await self.deps.tasks.update(
                    self.request.run_id, progress=round(lo + (hi - lo) * share, 4),
                    **{"details.steps": dict(latest)})
                if cancel_requested(task):
                    stop.set()

        reporter = asyncio.create_task(report())
        try:
            return await asyncio.to_thread(
                self.deps.trainer.fine_tune, base_dir, self.out_dir, data, tune, progress)
        finally:
            reporter.cancel()

    async def end_mlflow(self, status: str, tags: dict[str, str] | None = None) -> None:
        if self.mlflow_run is None:
            return
        run, self.mlflow_run = self.mlflow_run, None
        try:
            if tags:
                await asyncio.to_thread(self.deps.registry.log, run, None, None, tags)
            await asyncio.to_thread(self.deps.registry.end_run, run, status)
        except Exception:  # the task records the outcome; MLflow is best effort here
            log.warning("could not close MLflow run %s", run, exc_info=True)

    def cleanup(self) -> None:
        shutil.rmtree(self.out_dir, ignore_errors=True)


def _check_enough(stats: DatasetStats, data: TrainingDataset, request: TrainingRequested) -> None:
    # min_sessions guards learning from clicks alone; uploaded judgments are curated data.
    if request.use_sessions and not request.datasets and stats.sessions_with_clicks < request.min_sessions:
        raise Rejected(f"too few sessions with clicks: {stats.sessions_with_clicks} < min_sessions "
                       f"{request.min_sessions} ({stats.sessions} sessions in the window)")
    if data.train_size == 0:
        raise Rejected("no training examples: no clicked or judged item has a text in the tenant's index")
    if not data.eval_queries:
        where = (f"no query of dataset {request.eval_dataset!r} has a relevant item in the index"
                 if request.eval_dataset else "no clicks in the evaluation sessions")
        raise Rejected(f"no held-out evaluation queries: {where}")
