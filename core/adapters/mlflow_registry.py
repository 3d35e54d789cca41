"""MLflow: training runs (params, metrics, dataset statistics, the model directory) and the
registered model `flywheel-embedder`, whose version N serves as version N + 1 (see
core.serving). All calls block; async callers run them in a worker thread.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from core.domain import RegisteredModel
from core.ports import DependencyUnavailable
from core.serving import REGISTERED_MODEL_NAME, registry_version

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")


def is_unreachable(error: BaseException) -> bool:
    """MLflow's REST client wraps a refused connection, a timeout and repeated 5xx answers in
    `MlflowException("API request to ... failed with exception ...")`."""
    if isinstance(error, MlflowException):
        return "API request to" in error.message and "failed with exception" in error.message
    return isinstance(error, (ConnectionError, TimeoutError))


def unavailable_as_transient(method: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except DependencyUnavailable:
            raise
        except Exception as error:
            if is_unreachable(error):
                raise DependencyUnavailable(f"MLflow is unavailable: {str(error)[:300]}") from error
            raise
    return call

RUN_ID_TAG = "flywheel.run_id"
MODEL_ARTIFACT_PATH = "model"


class MLflowRegistry:
    def __init__(self, tracking_uri: str, experiment: str, work_dir: Path) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.work_dir = work_dir
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    # --- model files -------------------------------------------------------------------------
    @unavailable_as_transient
    def model_dir(self, serving: str, base_dir: Path) -> Path:
        """The sentence-transformers directory of a serving version: the base model for "1",
        else registry version N - 1 downloaded once into the work directory."""
        version = registry_version(serving)
        if version is None:
            return base_dir
        target = self.work_dir / "models" / f"v{serving}"
        if (target / "modules.json").is_file():
            return target
        source = self.client.get_model_version(REGISTERED_MODEL_NAME, str(version)).source
        if not source:
            raise FileNotFoundError(f"registered model version {version} has no source")
        return self.download(source, target)

    def download(self, artifact_uri: str, target: Path) -> Path:
        import mlflow.artifacts

        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        local = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=artifact_uri, dst_path=str(partial), tracking_uri=self.tracking_uri
        ))
        if not (local / "modules.json").is_file():
            raise FileNotFoundError(f"{artifact_uri} holds no sentence-transformers model")
        shutil.rmtree(target, ignore_errors=True)
        local.rename(target)
        shutil.rmtree(partial, ignore_errors=True)
        return target

    # --- runs --------------------------------------------------------------------------------
    @unavailable_as_transient
    def experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(self.client.create_experiment(self.experiment))
        except MlflowException:  # created concurrently
            found = self.client.get_experiment_by_name(self.experiment)
            assert found is not None
            return str(found.experiment_id)

    @unavailable_as_transient
    def start_run(self, run_name: str, tags: dict[str, str]) -> str:
        run = self.client.create_run(self.experiment_id(), run_name=run_name, tags=tags)
        return str(run.info.run_id)

    @unavailable_as_transient
    def run_url(self, mlflow_run_id: str) -> str:
        run = self.client.get_run(mlflow_run_id)
        return f"{self.tracking_uri}/#/experiments/{run.info.experiment_id}/runs/{mlflow_run_id}"

    @unavailable_as_transient
    def log(self, mlflow_run_id: str, params: dict[str, Any] | None = None,
            metrics: dict[str, float] | None = None, tags: dict[str, str] | None = None) -> None:
        import time

        now = int(time.time() * 1000)
        self.client.log_batch(
            mlflow_run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
            params=[Param(k, str(v)[:6000]) for k, v in (params or {}).items()],
            tags=[RunTag(k, v) for k, v in (tags or {}).items()],
        )

    @unavailable_as_transient
    def log_dict(self, mlflow_run_id: str, data: dict[str, Any], name: str) -> None:
        self.client.log_dict(mlflow_run_id, data, name)

    @unavailable_as_transient
    def log_model_dir(self, mlflow_run_id: str, model_dir: Path) -> str:
        """Upload the model directory; its artifact URI (what the registry version points at)."""
        self.client.log_artifacts(mlflow_run_id, str(model_dir), MODEL_ARTIFACT_PATH)
        return f"{self.client.get_run(mlflow_run_id).info.artifact_uri}/{MODEL_ARTIFACT_PATH}"

    @unavailable_as_transient
    def end_run(self, mlflow_run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(mlflow_run_id, status)

    # --- registry ----------------------------------------------------------------------------
    @unavailable_as_transient
    def register(self, artifact_uri: str, mlflow_run_id: str, run_id: str, tags: dict[str, str]) -> int:
        """A new version of the registered model; the one already made for `run_id` if any."""
        try:
            self.client.create_registered_model(
                REGISTERED_MODEL_NAME, description="Fine-tuned embedding models of the flywheel")
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        existing = self.registered_version(run_id)
        if existing is not None:
            return existing.version
        version = self.client.create_model_version(
            REGISTERED_MODEL_NAME, artifact_uri, run_id=mlflow_run_id, tags={RUN_ID_TAG: run_id, **tags}
        )
        return int(version.version)

    @unavailable_as_transient
    def registered_version(self, run_id: str) -> RegisteredModel | None:
        """The version registered for the flywheel run `run_id` (tag flywheel.run_id), if any:
        what a redelivered training request checks before it trains and registers again."""
        if "'" in run_id or "\\" in run_id:  # not expressible in a filter string: scan the versions
            query = f"name='{REGISTERED_MODEL_NAME}'"
        else:
            query = f"name='{REGISTERED_MODEL_NAME}' AND tags.`{RUN_ID_TAG}` = '{run_id}'"
        try:
            found = self.client.search_model_versions(query)
        except MlflowException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        mine = [v for v in found if v.tags.get(RUN_ID_TAG) == run_id]
        if not mine:
            return None
        first = min(mine, key=lambda v: int(v.version))
        return RegisteredModel(int(first.version), first.source or "", first.run_id, dict(first.tags))

    @unavailable_as_transient
    def published_mismatch(self, registry_version: int, artifact_uri: str, run_id: str) -> str | None:
        """Why a model-published event is not what the registry holds for its version (None
        when it is): the version must exist, point at the event's artifact, and belong to the
        event's run (the MLflow run that logged it, or the flywheel run tagged on it)."""
        try:
            found = self.client.get_model_version(REGISTERED_MODEL_NAME, str(registry_version))
        except MlflowException as error:
            if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return f"the registry holds no version {registry_version} of {REGISTERED_MODEL_NAME}"
            raise
        if (found.source or "") != artifact_uri:
            return (f"registry version {registry_version}'s artifact is {found.source!r}, "
                    f"not {artifact_uri!r}")
        if run_id not in {found.run_id, (found.tags or {}).get(RUN_ID_TAG)}:
            return f"registry version {registry_version} was not logged by run {run_id!r}"
        return None

    @unavailable_as_transient
    def log_serving(self, registry_version: int, tags: dict[str, str], metrics: dict[str, float],
                    decision: dict[str, Any]) -> None:
        """The form a deployed version serves: tags and metrics on the MLflow run that logged
        the registered version, the whole decision as `serving/v<registry>.json`, and the form
        as a tag of the registered version."""
        registered = self.client.get_model_version(REGISTERED_MODEL_NAME, str(registry_version))
        if registered.run_id:
            self.log(registered.run_id, metrics=metrics, tags=tags)
            self.client.log_dict(registered.run_id, decision, f"serving/v{registry_version}.json")
        for key in ("serving.form", "serving.reason"):
            if key in tags:
                self.client.set_model_version_tag(REGISTERED_MODEL_NAME, str(registry_version), key,
                                                  tags[key])

    @unavailable_as_transient
    def list_versions(self) -> list[dict[str, Any]]:
        try:
            found = self.client.search_model_versions(f"name='{REGISTERED_MODEL_NAME}'")
        except MlflowException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                return []
            raise
        rows = []
        for v in sorted(found, key=lambda v: int(v.version)):
            metrics: dict[str, float] = {}
            if v.run_id:
                with contextlib.suppress(MlflowException):
                    metrics = dict(self.client.get_run(v.run_id).data.metrics)
            rows.append({
                "registry_version": int(v.version), "run_id": v.run_id, "source": v.source,
                "status": v.status, "created_at": v.creation_timestamp, "tags": dict(v.tags),
                "metrics": metrics,
            })
        return rows
