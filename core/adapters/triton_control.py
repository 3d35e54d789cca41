"""Triton's model-control API (explicit mode) and its model repository on disk.

With `version_policy: all`, `load_model` re-reads the repository and loads every version in
it; the instances already serving keep answering until the new ones are ready, and when a
version fails to load Triton keeps the old ones. The repository is written only through
core.adapters.triton_repository, which places a version directory atomically. The query lane's
model (core.serving.query_model_name) mirrors the bulk model's versions: every change here
re-links them (sync_query_model), and `load` loads both.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from core.adapters.triton_repository import (
    add_model_version,
    clear_serving_dir,
    model_versions,
    read_serving_decision,
    sync_query_model,
)
from core.serving import query_model_name

# Status calls answer at once from a healthy server; waiting longer only hides a hung one.
PROBE_TIMEOUT_S = 10.0
# The directory prefix of a parked version (core.residency): not numeric, so Triton skips it.
PARKED = ".parked-"

class ModelLoadError(RuntimeError):
    """Triton refused or failed to load the model; the message carries Triton's reason."""


class TritonModelControl:
    def __init__(self, url: str, model_name: str, repository: Path, load_timeout_s: float = 600.0) -> None:
        self.url = url
        self.model_name = model_name
        self.repository = repository
        self.load_timeout_s = load_timeout_s
        self._client = grpcclient.InferenceServerClient(url)

    async def close(self) -> None:
        await self._client.close()

    # --- the repository (blocking file-system work: call from a thread) ---------------------
    def has_version(self, version: int) -> bool:
        return version in model_versions(self.repository, self.model_name)

    def place_version(self, version: int, model_dir: Path) -> None:
        add_model_version(self.repository, self.model_name, version, model_dir)

    def serving_decision(self, version: int) -> dict[str, Any] | None:
        return read_serving_decision(self.repository, self.model_name, version)

    def repository_versions(self) -> list[int]:
        return model_versions(self.repository, self.model_name)

    def placed_since(self, when: float) -> set[int]:
        root = self.repository / self.model_name
        return {v for v in model_versions(self.repository, self.model_name)
                if (root / str(v)).stat().st_mtime >= when}

    def parked_versions(self) -> list[int]:
        """Versions moved out of the repository (core.residency): not loaded, kept on disk."""
        root = self.repository / self.model_name
        if not root.is_dir():
            return []
        return sorted(int(p.name[len(PARKED):]) for p in root.iterdir()
                      if p.name.startswith(PARKED) and p.name[len(PARKED):].isdigit())

    def park_version(self, version: int) -> None:
        """Move a version out of the repository (a hidden directory beside it, which Triton
        ignores): the next load unloads it."""
        target = self.repository / self.model_name / str(version)
        if target.is_dir():
            target.rename(self.repository / self.model_name / f"{PARKED}{version}")
        sync_query_model(self.repository, self.model_name)

    def restore_version(self, version: int) -> None:
        """Put a parked version back: the next load loads it."""
        parked = self.repository / self.model_name / f"{PARKED}{version}"
        if parked.is_dir() and not (self.repository / self.model_name / str(version)).exists():
            parked.rename(self.repository / self.model_name / str(version))
        sync_query_model(self.repository, self.model_name)

    def remove_version(self, version: int) -> None:
        """Delete a version directory (only ever one that never served)."""
        target = self.repository / self.model_name / str(version)
        staging = self.repository / self.model_name / f".{version}.removing"
        if target.is_dir():
            target.rename(staging)  # disappears from the repository at once
            shutil.rmtree(staging, ignore_errors=True)
        clear_serving_dir(self.repository, self.model_name, version)
        sync_query_model(self.repository, self.model_name)

    # --- the server --------------------------------------------------------------------------
    async def load(self) -> None:
        """(Re)load the bulk model from the repository, then the query lane's model (when the
        repository has it) with the same versions; returns once Triton finished loading both."""
        # One after the other: a version that fails in the bulk model is never handed to the
        # query model, so removing it (the deployer does) cannot pull files from under a load
        # in progress (Triton then never finishes that load). The query instance reads the
        # bulk one's serving decision.
        await self._load(self.model_name)
        if sync_query_model(self.repository, self.model_name):
            await self._load(query_model_name(self.model_name))

    async def _load(self, name: str) -> None:
        try:
            await self._client.load_model(name, client_timeout=self.load_timeout_s)
        except InferenceServerException as error:
            raise ModelLoadError(f"Triton could not load {name}: {error.message()}") from error

    async def version_states(self) -> dict[str, tuple[str, str]]:
        """Each version Triton knows of this model: (state, reason)."""
        index = await self._client.get_model_repository_index(as_json=True, client_timeout=PROBE_TIMEOUT_S)
        states: dict[str, tuple[str, str]] = {}
        for model in index.get("models", []):
            if model.get("name") == self.model_name and model.get("version"):
                states[str(model["version"])] = (str(model.get("state", "")), str(model.get("reason", "")))
        return states

    async def is_ready(self, version: str) -> bool:
        try:
            return bool(await self._client.is_model_ready(
                self.model_name, version, client_timeout=PROBE_TIMEOUT_S))
        except InferenceServerException:
            return False
