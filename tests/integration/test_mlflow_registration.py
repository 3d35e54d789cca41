"""Registration against the real MLflow: the version registered for a flywheel run id is found
by that id before anything registers again, so a redelivered training request that crashed
between registering and recording registers at most one version."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from core.bootstrap import build_model_registry
from core.config import Settings
from infra.process import Component

pytestmark = pytest.mark.integration


async def test_the_version_of_a_run_id_is_found_and_never_registered_twice(
    mlflow_server: Component, test_settings: Settings, tmp_path: Path
) -> None:
    registry = build_model_registry(test_settings)
    run_id = f"registration-{uuid.uuid4().hex[:8]}"
    assert await asyncio.to_thread(registry.registered_version, run_id) is None

    model = tmp_path / "model"
    model.mkdir()
    (model / "modules.json").write_text(json.dumps([]))
    mlflow_run = await asyncio.to_thread(registry.start_run, f"train-{run_id}", {"flywheel.run_id": run_id})
    uri = await asyncio.to_thread(registry.log_model_dir, mlflow_run, model)
    version = await asyncio.to_thread(registry.register, uri, mlflow_run, run_id, {"base_version": "1"})
    # the process dies here, before the task records the version; the request is redelivered:
    found = await asyncio.to_thread(registry.registered_version, run_id)
    assert found is not None
    assert (found.version, found.source, found.mlflow_run_id) == (version, uri, mlflow_run)
    assert found.tags["base_version"] == "1"
    assert await asyncio.to_thread(registry.register, uri, mlflow_run, run_id, {}) == version
    assert await asyncio.to_thread(registry.registered_version, f"{run_id}-other") is None
    mine = [v for v in await asyncio.to_thread(registry.list_versions)
            if v["tags"].get("flywheel.run_id") == run_id]
    assert len(mine) == 1
