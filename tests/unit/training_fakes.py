"""In-memory fakes of the sessions/training ports, for unit tests of handlers only."""

from __future__ import annotations

import copy
import shutil
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from core.domain import RegisteredModel
from core.sessions import SessionDoc
from core.training.dataset import TrainingDataset
from core.training.finetune import FineTuneConfig
from core.training.runtime import Progress, TrainingResult
from schemas.model_published import ModelPublished


class FakeSessionRepo:
    def __init__(self) -> None:
        self.docs: dict[str, SessionDoc] = {}
        self.policy: dict[str, Any] = {"last_run_id": None, "last_requested_at": None}
        self.conflicts_to_inject = 0

    async def get_many(self, keys: Sequence[str]) -> dict[str, SessionDoc]:
        return {k: copy.deepcopy(self.docs[k]) for k in keys if k in self.docs}

    async def save(self, doc: SessionDoc, expected_revision: int | None) -> bool:
        if self.conflicts_to_inject:
            self.conflicts_to_inject -= 1
            return False
        current = self.docs.get(doc["_id"])
        if (current["revision"] if current else None) != expected_revision:
            return False
        self.docs[doc["_id"]] = {**copy.deepcopy(doc), "revision": (expected_revision or 0) + 1}
        return True

    async def count_created_since(self, since: datetime | None) -> int:
        return sum(1 for d in self.docs.values() if since is None or d["created_at"] > since)

    async def iter_sessions(
        self, since: datetime | None = None, until: datetime | None = None, batch_size: int = 256
    ) -> AsyncIterator[SessionDoc]:
        for key in sorted(self.docs):
            doc = self.docs[key]
            if since is not None and doc["last_event_at"] < since:
                continue
            if until is not None and doc["last_event_at"] >= until:
                continue
            yield copy.deepcopy(doc)

    async def policy_state(self) -> dict[str, Any]:
        return dict(self.policy)

    async def claim_policy_run(self, previous_run_id: str | None, run_id: str, at: datetime) -> bool:
        if self.policy["last_run_id"] != previous_run_id:
            return False
        self.policy = {"last_run_id": run_id, "last_requested_at": at}
        return True


class FakeItemTexts:
    def __init__(self, texts: dict[tuple[str, str], str]) -> None:
        self.items = texts
        self.calls: list[list[str]] = []

    async def texts(self, tenant: str, ids: Sequence[str]) -> dict[str, str]:
        self.calls.append(list(ids))
        return {i: self.items[(tenant, i)] for i in ids if (tenant, i) in self.items}

    async def sample(self, tenant: str, limit: int) -> dict[str, str]:
        return dict(sorted((i, text) for (t, i), text in self.items.items() if t == tenant)[:limit])


class FakeTasks:
    def __init__(self) -> None:
        self.tasks: dict[str, dict[str, Any]] = {}
        self.history: list[dict[str, Any]] = []

    async def create(self, task_id: str, type: Any, tenant: str, details: dict[str, Any] | None = None
                     ) -> tuple[dict[str, Any], bool]:
        if task_id in self.tasks:
            return copy.deepcopy(self.tasks[task_id]), False
        self.tasks[task_id] = {"id": task_id, "type": type, "tenant": tenant, "status": "pending",
                               "stage": "queued", "progress": 0.0, "error": None, "links": {},
                               "details": details or {}}
        return copy.deepcopy(self.tasks[task_id]), True

    async def update(self, task_id: str, **fields: Any) -> dict[str, Any] | None:
        task = self.tasks.get(task_id)
        if task is None:
            return None
        for key, value in fields.items():
            target = task
            *parents, leaf = key.split(".")
            for parent in parents:
                target = target.setdefault(parent, {})
            target[leaf] = value
        self.history.append(dict(fields))
        return copy.deepcopy(task)


class FakeDatasets:
    def __init__(self, data: TrainingDataset) -> None:
        self.data = data
        self.builds = 0

        self.calls: list[dict[str, Any]] = []

    async def build(self, since: Any = None, until: Any = None, **sources: Any) -> TrainingDataset:
        self.builds += 1
        self.calls.append(sources)
        return self.data


class FakeTrainer:
    """'Trains' by copying a marker file; scores come from a table keyed by model dir name."""

    def __init__(self, base_score: float, candidate_score: float, fail: Exception | None = None) -> None:
        self.scores = {"base": base_score, "candidate": candidate_score}
        self.fail = fail
        self.trained = 0
        self.configs: list[FineTuneConfig] = []

    def fine_tune(self, base_dir: Path, out_dir: Path, data: TrainingDataset, config: FineTuneConfig,
                  progress: Progress | None = None) -> TrainingResult:
        self.configs.append(config)
        if self.fail is not None:
            raise self.fail
        self.trained += 1
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "modules.json").write_text("[]")
        for step in range(1, 4):
            if progress:
                progress(step, 3)
        return TrainingResult(3, 0.01, "cpu", 1.0, 0.5)

    def evaluate(self, model_dir: Path, data: TrainingDataset) -> dict[str, float]:
        which = "base" if model_dir.name == "base" else "candidate"
        score = self.scores[which]
        return {"ndcg_at_10": score, "mrr_at_10": score, "recall_at_10": score, "queries": 2.0,
                "hybrid_ndcg_at_10": score + 0.05, "fusion_weight": 0.5 if which == "base" else 0.3,
                "fusion_queries": 2.0, "hybrid_ndcg_at_10_at_0_3": score + 0.05}


class FakeRegistry:
    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.runs: dict[str, dict[str, Any]] = {}
        self.versions: list[dict[str, Any]] = []

    def model_dir(self, serving: str, base_dir: Path) -> Path:
        return self.base_dir

    def start_run(self, run_name: str, tags: dict[str, str]) -> str:
        run = f"mlflow-{len(self.runs) + 1}"
        self.runs[run] = {"name": run_name, "tags": dict(tags), "params": {}, "metrics": {}, "status": None}
        return run

    def run_url(self, mlflow_run_id: str) -> str:
        return f"http://mlflow/#/runs/{mlflow_run_id}"

    def log(self, mlflow_run_id: str, params: dict[str, Any] | None = None,
            metrics: dict[str, float] | None = None, tags: dict[str, str] | None = None) -> None:
        run = self.runs[mlflow_run_id]
        run["params"].update(params or {})
        run["metrics"].update(metrics or {})
        run["tags"].update(tags or {})

    def log_dict(self, mlflow_run_id: str, data: dict[str, Any], name: str) -> None:
        self.runs[mlflow_run_id][name] = data

    def log_model_dir(self, mlflow_run_id: str, model_dir: Path) -> str:
        assert (model_dir / "modules.json").is_file()
        return f"mlflow-artifacts:/{mlflow_run_id}/model"

    def end_run(self, mlflow_run_id: str, status: str = "FINISHED") -> None:
        self.runs[mlflow_run_id]["status"] = status

    def register(self, artifact_uri: str, mlflow_run_id: str, run_id: str, tags: dict[str, str]) -> int:
        self.versions.append({"source": artifact_uri, "run": mlflow_run_id, "run_id": run_id, "tags": tags})
        return len(self.versions)

    def registered_version(self, run_id: str) -> RegisteredModel | None:
        for number, v in enumerate(self.versions, start=1):
            if v["run_id"] == run_id:
                tags = {"flywheel.run_id": run_id, **v["tags"]}
                return RegisteredModel(number, v["source"], v["run"], tags)
        return None


class Published:
    def __init__(self) -> None:
        self.events: list[ModelPublished] = []

    async def __call__(self, event: ModelPublished) -> None:
        self.events.append(event)


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
