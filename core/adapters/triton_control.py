"""Triton's model-control API (explicit mode) over the embedder's model repository on disk.

Each version is a Triton model of its own in each lane (core.adapters.triton_repository), so
`load` loads only the versions placed or restored since the last one and unloads only the ones
parked or removed; the versions serving keep serving untouched. When a version fails to load,
Triton keeps the others. The repository is written only through
core.adapters.triton_repository, which places a version atomically.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

import core.adapters.triton_repository as repository
from core.serving import bulk_version, query_model_name, served_version, version_model_name

log = logging.getLogger(__name__)

# Status calls answer at once from a healthy server; waiting longer only hides a hung one.
PROBE_TIMEOUT_S = 10.0
# Index states of a model Triton holds (loaded, loading or failed), as opposed to one it unloaded.
_HELD = ("READY", "LOADING", "UNLOADING")


def _failed(state: str, reason: str) -> bool:
    return state == "UNAVAILABLE" and reason not in ("", "unloaded")


class ModelLoadError(RuntimeError):
    """Triton refused or failed to load the model; the message carries Triton's reason."""


class TritonModelControl:
    def __init__(self, url: str, model_name: str, repository: Path, load_timeout_s: float = 600.0) -> None:
        self.url = url
        self.model_name = model_name
        self.repository = repository
        self.load_timeout_s = load_timeout_s
        self._client = grpcclient.InferenceServerClient(url)
        self._loading = asyncio.Lock()

    async def close(self) -> None:
        await self._client.close()

    # --- the repository (blocking file-system work: call from a thread) ---------------------
    def has_version(self, version: int) -> bool:
        return version in repository.model_versions(self.repository, self.model_name)

    def place_version(self, version: int, model_dir: Path) -> None:
        repository.add_model_version(self.repository, self.model_name, version, model_dir)

    def serving_decision(self, version: int) -> dict[str, Any] | None:
        return repository.read_serving_decision(self.repository, self.model_name, version)

    def repository_versions(self) -> list[int]:
        return repository.model_versions(self.repository, self.model_name)

    def placed_since(self, when: float) -> set[int]:
        return {v for v in repository.model_versions(self.repository, self.model_name)
                if repository.version_dir(self.repository, self.model_name, v).stat().st_mtime >= when}

    def parked_versions(self) -> list[int]:
        """Versions moved out of the repository (core.residency): not loaded, kept on disk."""
        return repository.parked_versions(self.repository, self.model_name)

    def park_version(self, version: int) -> None:
        """Move a version out of the repository: the next load unloads it."""
        repository.park_version(self.repository, self.model_name, version)

    def restore_version(self, version: int) -> None:
        """Put a parked version back: the next load loads it."""
        repository.restore_version(self.repository, self.model_name, version)

    def remove_version(self, version: int) -> None:
        """Delete a version (only ever one that never served)."""
        repository.remove_version(self.repository, self.model_name, version)

    # --- the server --------------------------------------------------------------------------
    async def load(self, retry_failed: bool = True) -> None:
        """Make Triton serve the repository's versions: load each version's bulk model, then its
        query model, where Triton does not have it ready, and unload the models of versions no
        longer in the repository. Returns once Triton finished; a version that fails raises
        ModelLoadError after the others were handled. `retry_failed` False leaves a version whose
        last load failed as it is (its deploy reports and withdraws it)."""
        async with self._loading:  # the deployer's rollouts and its residency loop share one server
            index = await self._index()
            present = await asyncio.to_thread(self.repository_versions)
            failures: list[str] = []
            for version in present:
                # One after the other: a version that fails in the bulk model is never handed to
                # the query model, so removing it (the deployer does) cannot pull files from under
                # a load in progress. The query instance reads the bulk one's serving decision.
                bulk = version_model_name(self.model_name, version)
                try:
                    for name in (bulk, query_model_name(bulk)):
                        state, reason = index.get(name, ("", ""))
                        if state != "READY" and (retry_failed or not _failed(state, reason)):
                            await self._load(name)
                except ModelLoadError as error:
                    failures.append(str(error))
            # The index lists only the models in the repository: the loaded ones come from the
            # statistics, which list every model Triton serves.
            held = {name for name, (state, reason) in index.items()
                    if state in _HELD or _failed(state, reason)}
            for name in sorted(held | await self._serving()):
                if served_version(self.model_name, name) not in present:
                    await self._unload(name)
            if failures:
                raise ModelLoadError("; ".join(failures))

    async def _load(self, name: str) -> None:
        try:
            await self._client.load_model(name, client_timeout=self.load_timeout_s)
        except InferenceServerException as error:
            raise ModelLoadError(f"Triton could not load {name}: {error.message()}") from error

    async def _unload(self, name: str) -> None:
        try:
            await self._client.unload_model(name, client_timeout=PROBE_TIMEOUT_S)
        except InferenceServerException as error:  # the next load tries again
            log.warning("Triton could not unload %s: %s", name, error.message())

    async def _serving(self) -> set[str]:
        """The embedder's models Triton has loaded, either lane, in the repository or not."""
        stats = await self._client.get_inference_statistics(as_json=True, client_timeout=PROBE_TIMEOUT_S)
        return {str(m["name"]) for m in stats.get("model_stats", [])
                if served_version(self.model_name, str(m.get("name", ""))) is not None}

    async def _index(self) -> dict[str, tuple[str, str]]:
        """The embedder's models Triton knows of, either lane: name -> (state, reason)."""
        index = await self._client.get_model_repository_index(as_json=True, client_timeout=PROBE_TIMEOUT_S)
        return {str(m["name"]): (str(m.get("state", "")), str(m.get("reason", "")))
                for m in index.get("models", [])
                if served_version(self.model_name, str(m.get("name", ""))) is not None}

    async def version_states(self) -> dict[str, tuple[str, str]]:
        """Each version Triton knows of (its bulk model): (state, reason)."""
        index = await self._index()
        found = ((bulk_version(self.model_name, name), state) for name, state in index.items())
        return {str(version): state for version, state in found if version is not None}

    async def is_ready(self, version: str) -> bool:
        try:
            return bool(await self._client.is_model_ready(
                version_model_name(self.model_name, version), version, client_timeout=PROBE_TIMEOUT_S))
        except InferenceServerException:
            return False
