"""The models routes over fakes: a lost race is a 409 naming what changed, a failed version
and an ended split say why."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from core.ab import EndedSplit
from core.api_keys import hash_key
from core.config import Settings
from core.domain import ConcurrentChange, Expected
from gateway import deps
from gateway.main import create_app
from gateway.security import RateLimiter

KEYS = [{"key_id": "admin", "key_sha256": hash_key("admin-key"), "tenant": "t", "scopes": ["admin"]},
        {"key_id": "operator", "key_sha256": hash_key("operator-key"), "tenant": "ops",
         "scopes": ["operator"]}]
ADMIN = {"Authorization": "Bearer admin-key"}
OPERATOR = {"Authorization": "Bearer operator-key"}
CREATED = datetime(2026, 1, 1, tzinfo=UTC)


class Store:
    """Version 1 active, 2 the rollback target, 3 failed; another change lands on every switch."""

    def __init__(self) -> None:
        self.switched: list[tuple[str, Expected | None]] = []
        self.tenants: list[str] = []

    def for_tenant(self, tenant: str) -> Store:
        """Every call acts on one tenant's lineage: the tenants asked for are kept."""
        self.tenants.append(tenant)
        return self

    async def active_version(self) -> str | None:
        return "1"

    async def writable_versions(self) -> list[str]:
        return ["1", "2"]

    async def list_versions(self) -> list[dict[str, Any]]:
        return [
            {"version": "1", "dim": 8, "status": "active", "created_at": CREATED, "activated_at": CREATED},
            {"version": "2", "dim": 8, "status": "retired", "created_at": CREATED, "activated_at": None},
            {"version": "3", "dim": 8, "status": "failed", "created_at": CREATED, "activated_at": None,
             "reason": "reindex failed at backfilling: boom"},
        ]

    async def activate(self, version: str, expected: Expected | None = None) -> str | None:
        self.switched.append((version, expected))
        raise ConcurrentChange(f"the active version changed from 1 to 4 since the activation of "
                               f"version {version} was decided; nothing was changed")


class Embedder:
    async def ready(self, model_version: str) -> bool:
        return True


class Splits:
    async def ended_split(self, tenant: str) -> EndedSplit:
        return EndedSplit("2", 20.0, CREATED, "ended automatically: candidate version 2 stopped "
                                              "receiving new content when version 4 was activated")


class Experiments:
    splits = Splits()

    async def split(self, tenant: str) -> None:
        return None

    def forget_split(self, tenant: str) -> None:
        pass

    async def online_metrics(self, sessions: Any, tenant: str) -> tuple[dict[str, Any], int]:
        return {}, 0

    async def improver_states(self, tenant: str) -> dict[str, Any]:
        return {}


@contextmanager
def client(store: Store) -> Iterator[TestClient]:
    # No model repository here, whatever FLYWHEEL_STATE_DIR says: serving forms come from the deploys.
    app = create_app(Settings(api_keys_json=json.dumps(KEYS), triton_repository_dir=Path("/nonexistent")))

    class Tasks:
        async def evaluation_metrics(self) -> dict[str, Any]:
            return {}

        async def lineage(self) -> dict[str, Any]:
            return {"2": {"training_run": "run-7", "base_version": "1", "dataset": {"pairs": 40},
                          "gate": {"decision": "passed", "margin": 0.0, "reason": "0.71 > 0.62"},
                          "mlflow_run": "http://mlflow/#/experiments/1/runs/abc"}}

        async def list(self, **query: Any) -> list[dict[str, Any]]:
            assert query["type"] == "deploy" and query["status"] == "succeeded"
            return [{"details": {"model_version": "2", "serving": {"form": "bf16", "reason": "1.9x fp32"}}}]

    async def sessions() -> None:
        return None

    async def tasks() -> Tasks:
        return Tasks()

    app.dependency_overrides[deps.store] = lambda: store
    app.dependency_overrides[deps.embedder] = lambda: Embedder()
    app.dependency_overrides[deps.experiments] = lambda: Experiments()
    with TestClient(app) as c:
        c.app.state.resources.limiter = RateLimiter(100, 100)  # type: ignore[attr-defined]
        c.app.state.resources.sessions = sessions  # type: ignore[attr-defined]
        c.app.state.resources.tasks = tasks  # type: ignore[attr-defined]
        yield c


def test_an_activation_that_lost_a_race_is_a_409_and_nothing_switched() -> None:
    store = Store()
    with client(store) as c:
        answer = c.post("/v1/models/2/activate", headers=ADMIN)
    assert answer.status_code == 409, answer.text
    assert "active version changed from 1 to 4" in answer.json()["detail"]
    assert store.switched == [("2", Expected("1", "retired"))]  # decided from what it saw


def test_an_activation_decided_from_another_active_version_is_a_409() -> None:
    store = Store()
    with client(store) as c:
        answer = c.post("/v1/models/2/activate?expected_active=4", headers=ADMIN)
    assert answer.status_code == 409 and "not 4 as expected" in answer.json()["detail"]
    assert store.switched == []


def test_a_failed_version_is_refused_and_the_list_says_why() -> None:
    store = Store()
    with client(store) as c:
        refused = c.post("/v1/models/3/activate", headers=ADMIN)
        assert refused.status_code == 409 and "failed to index" in refused.json()["detail"]
        listed = c.get("/v1/models", headers=ADMIN).json()
    assert store.switched == []
    failed = next(v for v in listed["versions"] if v["version"] == "3")
    assert failed["status"] == "failed" and failed["reason"] == "reindex failed at backfilling: boom"
    assert listed["ab_split"] is None
    # the form each version serves: from its deploy's record (the repository is not readable here)
    assert next(v for v in listed["versions"] if v["version"] == "2")["serving"]["form"] == "bf16"
    assert failed["serving"] is None
    assert listed["ab_split_ended"]["candidate_version"] == "2"
    assert "stopped receiving new content" in listed["ab_split_ended"]["reason"]


def test_model_routes_act_on_the_key_s_tenant_and_another_tenant_needs_the_operator_scope() -> None:
    store = Store()
    with client(store) as c:
        assert c.post("/v1/models/2/activate", headers=ADMIN).status_code == 409  # the race above
        assert store.tenants == ["t"]
        refused = c.post("/v1/models/2/activate?tenant=other", headers=ADMIN)
        assert refused.status_code == 403 and refused.json()["errors"][0]["field"] == "tenant"
        assert c.get("/v1/models?tenant=other", headers=ADMIN).status_code == 403
        assert c.put("/v1/models/ab-split?tenant=other", headers=ADMIN,
                      json={"candidate_version": "2", "percent": 10}).status_code == 403
        assert store.tenants == ["t"] and len(store.switched) == 1  # nothing of the other tenant's
        listed = c.get("/v1/models?tenant=other", headers=OPERATOR)
        assert listed.status_code == 200 and listed.json()["tenant"] == "other"
    assert store.tenants == ["t", "other"]


def test_the_list_shows_each_trained_versions_lineage() -> None:
    with client(Store()) as c:
        listed = {v["version"]: v for v in c.get("/v1/models", headers=ADMIN).json()["versions"]}
    assert listed["1"]["lineage"] is None  # not produced by a training run
    lineage = listed["2"]["lineage"]
    assert lineage["base_version"] == "1" and lineage["gate"]["decision"] == "passed"
    assert lineage["dataset"] == {"pairs": 40} and lineage["mlflow_run"].startswith("http://mlflow/")
