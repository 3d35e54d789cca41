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


@dataclass(frozen=True)
class SearchResult:
    hits: list[SearchHit]
    model_version: str
    mode: SearchMode = "vector"
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchQuery:
    text: str
    k: int = 10
    tenant: str = "default"
    filters: dict[str, Any] = field(default_factory=dict)
    mode: SearchMode = "vector"
    # The model version to search (an A/B candidate); None: the active version.
    version: str | None = None
