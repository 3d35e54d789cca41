"""Domain objects shared by the services: plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

SearchMode = Literal["vector", "hybrid"]


@dataclass(frozen=True)
class Item:
    tenant: str
    id: str
    title: str
    text: str
    metadata: dict[str, Any]
    version: int


@dataclass(frozen=True)
class ChunkVectors:
    """The chunks of one item embedded by one model version."""

    item: Item
    texts: list[str]
    vectors: np.ndarray  # shape (len(texts), dim), L2-normalised float32


@dataclass(frozen=True)
class Embeddings:
    vectors: np.ndarray
    model_name: str
    model_version: str


@dataclass(frozen=True)
class SearchHit:
    id: str
    score: float
    title: str
    metadata: dict[str, Any]
    # The text of the item's chunk closest to the query, trimmed (core.snippets); None: not asked.
    snippet: str | None = None
    # Hybrid: the `vector` and `keyword` rankings' score and rank of the item (None where a
    # ranking does not hold it), from which `score` is fused (core.fusion.convex_fusion).
    score_parts: dict[str, dict[str, float | int] | None] | None = None


@dataclass(frozen=True)
class SearchResult:
    hits: list[SearchHit]
    model_version: str
    mode: SearchMode = "vector"
    timings_ms: dict[str, float] = field(default_factory=dict)
    fusion_weight: float | None = None  # hybrid: the vector part's share of each score


@dataclass(frozen=True)
class SearchQuery:
    text: str
    k: int = 10
    tenant: str = "default"
    filters: dict[str, Any] = field(default_factory=dict)
    mode: SearchMode = "vector"
    # The model version to search (an A/B candidate); None: the active version.
    version: str | None = None


# --- rollout state ---------------------------------------------------------------------------
# The lineage key of tenants that have none of their own yet (not a valid tenant name): its
# active version is what a new tenant serves; a tenant's first change of its rollout state
# starts its own lineage as a copy of it. The base model version is shared by every tenant.
NEW_TENANTS = "*"


@dataclass(frozen=True)
class Expected:
    """The rollout state a change was decided from: the active version seen then and, when
    given, the status the changed version had. A change carrying it is a compare-and-set: it is
    applied only if the state still is this, in the same transaction."""

    active: str | None
    status: str | None = None


class ConcurrentChange(RuntimeError):
    """A compare-and-set lost a race: the rollout state changed between the decision and the
    change (another activation, rollback, reindex or split change); nothing was applied. The
    message says what changed; decide again from the current state."""


@dataclass(frozen=True)
class RegisteredModel:
    """A version of the registered model (MLflow): its number, its artifact URI, the MLflow run
    that logged it and its tags (the flywheel run id, the base version)."""

    version: int
    source: str
    mlflow_run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
