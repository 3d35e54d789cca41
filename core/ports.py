"""The ports handlers depend on. Adapters implement them against real components; unit
tests implement them in memory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from core.domain import ChunkVectors, Embeddings, Expected, Item, RegisteredModel

if TYPE_CHECKING:
    from core.ab import ABSplit
    from core.improver import ChunkState, ChunkUpdate, ImproverState, Key
    from core.sessions import SessionDoc
    from core.sources import SourceSpec
    from core.training.dataset import Judged, TrainingDataset
    from core.training.finetune import FineTuneConfig
    from core.training.runtime import Progress, TrainingResult


class DependencyUnavailable(RuntimeError):
    """A component an adapter talks to is down or failing: the work is retried later, it is
    not the input's fault."""


# "query": a caller is waiting (search, /v1/embeddings), served before queued "bulk" work
# (indexing, reindexing), which never holds a query up for more than the batch in progress.
Lane = Literal["query", "bulk"]


class Embedder(Protocol):
    max_batch_size: int

    async def embed(self, texts: Sequence[str], model_version: str, *, lane: Lane = "bulk") -> Embeddings:
        """L2-normalised vectors for `texts`, by the given model version."""
        ...


class KeywordSearch(Protocol):
    async def text_search(
        self, tenant: str, query: str, k: int, filters: dict[str, Any]
    ) -> list[tuple[str, float]]:
        """The tenant's items BM25 ranks highest for `query`, (id, score) best first."""
        ...


class VectorStore(KeywordSearch, Protocol):
    async def writable_versions(self) -> list[str]:
        """The active version and any version being built: every write goes to all of them."""
        ...

    async def active_version(self) -> str | None: ...

    async def dimensions(self) -> dict[str, int]:
        """The vector dimension of every model version with an index."""
        ...

    async def fusion_weight(self, version: str) -> float | None:
        """The vector share of hybrid search's score chosen for `version` by its training;
        None: core.fusion.VECTOR_WEIGHT."""
        ...

    async def pending(
        self, wanted: dict[tuple[str, str], int], versions: Sequence[str]
    ) -> dict[str, set[tuple[str, str]]]:
        """Per model version, the (tenant, id) keys whose chunks need (re-)embedding."""
        ...

    async def apply(
        self,
        upserts: dict[str, list[ChunkVectors]],
        deletes: Sequence[tuple[str, str]],
    ) -> int:
        """In one transaction: upsert items (only over a lower version) with their chunks per
        model version, and delete (tenant, id) items with their chunks. Returns items changed."""
        ...

    async def vector_search(
        self, version: str, tenant: str, query: np.ndarray, k: int, filters: dict[str, Any]
    ) -> list[tuple[str, float]]: ...

    async def describe(self, tenant: str, ids: Sequence[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        """Title and metadata of each item."""
        ...


class Tasks(Protocol):
    """Long-running task records (core.adapters.task_store.TaskStore)."""

    async def create(
        self, task_id: str, type: Any, tenant: str, details: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], bool]:
        """The task with this id, created as pending if new; the flag says whether it was."""
        ...

    async def update(self, task_id: str, **fields: Any) -> dict[str, Any] | None: ...


# --- sessions and the training policy ------------------------------------------------------
class SessionRepository(Protocol):
    """Where session documents live (MongoDB in production, a dict in unit tests)."""

    async def get_many(self, keys: Sequence[str]) -> dict[str, SessionDoc]: ...

    async def save(self, doc: SessionDoc, expected_revision: int | None) -> bool:
        """Write `doc` with its revision bumped if the stored revision still is `expected_revision`
        (None: the session must not exist yet). False on a concurrent change."""
        ...

    async def count_created_since(self, since: datetime | None) -> int: ...

    def iter_sessions(
        self, since: datetime | None = None, until: datetime | None = None, batch_size: int = 256
    ) -> AsyncIterator[SessionDoc]:
        """Sessions whose last event lies in [since, until), streamed in `_id` order."""
        ...


class PolicyState(Protocol):
    """The training policy's bookkeeping: when and by which run id it last asked for training."""

    async def policy_state(self) -> dict[str, Any]: ...

    async def claim_policy_run(self, previous_run_id: str | None, run_id: str, at: datetime) -> bool:
        """Record `run_id` as the latest request if `previous_run_id` still is; False otherwise."""
        ...


class TrainingPolicyStore(PolicyState, Protocol):
    """One tenant's training policy: its bookkeeping and its sessions created since."""

    async def count_created_since(self, since: datetime | None) -> int: ...


class SessionSource(Protocol):
    def iter_sessions(
        self, since: datetime | None = None, until: datetime | None = None, batch_size: int = 256
    ) -> AsyncIterator[SessionDoc]: ...



class PolicyRepository(SessionRepository, PolicyState, Protocol):
    """The sessions service's store: session documents and the training policy's bookkeeping."""


# --- training ------------------------------------------------------------------------------
class Datasets(Protocol):
    async def build(
        self, since: Any = None, until: Any = None, *, tenant: str = "default", use_sessions: bool = True,
        judged: Sequence[Judged] = (), held_out: Sequence[Judged] | None = None, corpus: bool = False,
    ) -> TrainingDataset: ...


class Judgments(Protocol):
    async def judgments_of(self, tenant: str, name: str) -> list[dict[str, Any]] | None:
        """Every judgment of the tenant's uploaded dataset `name` (query, item_id, grade), in
        upload order; None when the tenant has no ready dataset of that name."""
        ...


class ModelTrainer(Protocol):
    def fine_tune(self, base_dir: Path, out_dir: Path, data: TrainingDataset, config: FineTuneConfig,
                  progress: Progress | None = None) -> TrainingResult: ...

    def evaluate(self, model_dir: Path, data: TrainingDataset) -> dict[str, float]: ...


class ModelRegistry(Protocol):
    def model_dir(self, serving: str, base_dir: Path) -> Path: ...
    def start_run(self, run_name: str, tags: dict[str, str]) -> str: ...
    def run_url(self, mlflow_run_id: str) -> str: ...
    def log(self, mlflow_run_id: str, params: dict[str, Any] | None = None,
            metrics: dict[str, float] | None = None, tags: dict[str, str] | None = None) -> None: ...
    def log_dict(self, mlflow_run_id: str, data: dict[str, Any], name: str) -> None: ...
    def log_model_dir(self, mlflow_run_id: str, model_dir: Path) -> str: ...
    def end_run(self, mlflow_run_id: str, status: str = "FINISHED") -> None: ...
    def register(self, artifact_uri: str, mlflow_run_id: str, run_id: str, tags: dict[str, str]) -> int: ...
    def registered_version(self, run_id: str) -> RegisteredModel | None:
        """The version already registered for the flywheel run `run_id`, if any."""
        ...


class ItemTexts(Protocol):
    async def texts(self, tenant: str, ids: Sequence[str]) -> dict[str, str]:
        """The text to embed for each item that exists (title and body, as indexed)."""
        ...

    async def sample(self, tenant: str, limit: int) -> dict[str, str]:
        """Up to `limit` of the tenant's items with their texts, the same ones each time."""
        ...


class CandidateRanker(Protocol):
    async def rank(self, tenant: str, query: str, depth: int, positives: dict[str, str]
                   ) -> tuple[list[tuple[str, float]], dict[str, float]]:
        """The tenant's items its active model ranks highest for `query` ((id, cosine), best
        first, at most `depth`), and the cosine of each positive's text (id -> text) to it."""
        ...


# --- rollout: deploy, reindex, activation --------------------------------------------------
class ModelServer(Protocol):
    """Triton's repository and model-control API (core.adapters.triton_control)."""

    def has_version(self, version: int) -> bool: ...

    def place_version(self, version: int, model_dir: Path) -> None: ...

    def remove_version(self, version: int) -> None: ...

    def repository_versions(self) -> list[int]:
        """The versions in the model repository (loaded by the next load)."""
        ...

    def placed_since(self, when: float) -> set[int]:
        """Versions whose directory was placed in the repository at or after `when` (epoch s)."""
        ...

    def parked_versions(self) -> list[int]: ...

    def park_version(self, version: int) -> None: ...

    def restore_version(self, version: int) -> None: ...

    async def load(self, retry_failed: bool = True) -> None:
        """Load the versions in the repository Triton does not serve yet (with `retry_failed`
        False, not those whose last load failed) and unload the ones no longer there."""
        ...

    async def is_ready(self, version: str) -> bool: ...

    async def version_states(self) -> dict[str, tuple[str, str]]: ...

    def serving_decision(self, version: int) -> dict[str, Any] | None:
        """The form the loaded version serves and why (its serving.json), if it wrote one."""
        ...


class ReindexStore(VectorStore, Protocol):
    async def ensure_version(self, version: str, dim: int, status: str = "building",
                             fusion_weight: float | None = None) -> None: ...

    async def activate(self, version: str, expected: Expected | None = None) -> str | None:
        """Switch search to `version`; with `expected`, only if the state still is that (else
        core.domain.ConcurrentChange). Returns the previously active version."""
        ...

    async def finish_version(self, version: str) -> None: ...

    async def fail_version(self, version: str, reason: str) -> bool:
        """Mark a version still being built `failed` (nothing writes to it any more)."""
        ...

    async def list_versions(self) -> list[dict[str, Any]]: ...

    async def item_versions(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]: ...

    async def missing_items(self, version: str, limit: int = 256) -> list[Item]: ...

    async def delete_orphans(self, version: str) -> int: ...


class ServingEmbedder(Embedder, Protocol):
    async def ready(self, model_version: str) -> bool: ...


class ReplaySource(Protocol):
    """One topic read by a consumer group of its own, partition by partition."""

    async def end_offsets(self) -> dict[int, int]: ...

    async def resume(self, from_offset: int) -> dict[int, int]:
        """Seek every partition to the group's committed offset (else `from_offset`); the positions."""
        ...

    async def fetch(self, ends: dict[int, int], max_records: int) -> tuple[list[Any], dict[int, int]]:
        """Records below `ends`, and every partition's position after them (at most its end)."""
        ...

    async def commit(self, positions: dict[int, int]) -> None: ...


class RolloutStore(Protocol):
    async def list_versions(self) -> list[dict[str, Any]]: ...

    async def active_version(self) -> str | None: ...

    async def writable_versions(self) -> list[str]: ...

    async def activate(self, version: str, expected: Expected | None = None) -> str | None: ...


# --- the improver --------------------------------------------------------------------------
class AdjustmentStore(Protocol):
    """The improver's state and vectors; every run is one tenant's (its items only)."""

    async def active_version(self, tenant: str) -> str | None: ...

    async def improver_state(self, version: str, tenant: str) -> ImproverState: ...

    async def chunk_vectors(self, version: str, keys: Sequence[Key]) -> dict[Key, list[ChunkState]]:
        """Each existing item's chunks: the stored vector and the original one."""
        ...

    async def commit_run(
        self, version: str, tenant: str, expected_revision: int, updates: Sequence[ChunkUpdate],
        watermark: datetime, metrics: dict[str, float],
    ) -> bool:
        """In one transaction, if `tenant`'s revision of `version` still is `expected_revision`:
        keep the originals, write the adjusted vectors (only over the same item version; only
        the tenant's items), bump the revision (when there are updates) and store watermark and
        metrics. False on a concurrent run."""
        ...

    async def revert(self, version: str, tenant: str | None = None) -> int:
        """Restore every original vector of `version` (of `tenant`'s items only, when given);
        returns the chunks restored."""
        ...


class TenantSessionSource(Protocol):
    """Every tenant's sessions, read one tenant at a time (the improver's source)."""

    async def tenants_since(self, since: datetime) -> list[str]:
        """The tenants with a session active at or after `since`."""
        ...

    def for_tenant(self, tenant: str) -> SessionSource: ...


# --- A/B split -----------------------------------------------------------------------------
class SplitStore(Protocol):
    async def get_split(self) -> ABSplit | None: ...

    async def set_split(self, candidate_version: str, percent: float, expected: Expected | None = None
                        ) -> ABSplit:
        """Store the split; with `expected`, only if the state still is that (else
        core.domain.ConcurrentChange)."""
        ...

    async def clear_split(self) -> bool: ...


class SplitVersions(Protocol):
    """What a split is validated against."""

    async def list_versions(self) -> list[dict[str, Any]]: ...

    async def active_version(self) -> str | None: ...

    async def writable_versions(self) -> list[str]: ...


class VersionLister(Protocol):
    async def list_versions(self) -> list[dict[str, Any]]: ...


class ServedVersions(VersionLister, Protocol):
    """The versions a client may name (each with its `dim`, optionally its owning `tenant`)."""

    async def active_version(self) -> str | None: ...


# --- sources (change data capture) -----------------------------------------------------
class SourceStore(Protocol):
    async def add(self, spec: SourceSpec) -> bool:
        """Store `spec`; False when a source of that name exists already."""
        ...

    async def get(self, name: str) -> SourceSpec | None: ...

    async def list_sources(self, tenant: str | None = None) -> list[SourceSpec]: ...

    async def remove(self, name: str) -> bool: ...

    async def item_ids(self, tenant: str, source: str, metadata_key: str) -> list[str]: ...

    async def close(self) -> None: ...


class SourceDatabase(Protocol):
    async def check(self, spec: SourceSpec) -> None:
        """Raise SourceError naming the fix when the table cannot be captured as asked."""
        ...

    async def forget(self, spec: SourceSpec) -> None:
        """Drop what capturing left in the source database (replication slot, publication)."""
        ...


class ConnectorControl(Protocol):
    async def put(self, name: str, config: dict[str, str]) -> None: ...

    async def status(self, name: str) -> dict[str, Any] | None: ...

    async def delete(self, name: str) -> bool: ...

    async def close(self) -> None: ...
