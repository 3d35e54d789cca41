"""Latency summaries and retrieval quality: plain functions, no I/O."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks
    (NumPy's default method). Raises ValueError on an empty sequence."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, not {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = math.ceil(position)
    if low == high:
        return float(ordered[low])
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


@dataclass(frozen=True)
class Summary:
    """Milliseconds (or any unit) of n observations."""

    n: int
    mean: float
    p50: float
    p90: float
    p99: float
    min: float
    max: float

    def to_dict(self, digits: int = 2) -> dict[str, Any]:
        return {k: (round(v, digits) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def summarize(values: Sequence[float]) -> Summary:
    if not values:
        raise ValueError("summary of no values")
    return Summary(
        n=len(values),
        mean=float(sum(values) / len(values)),
        p50=percentile(values, 50),
        p90=percentile(values, 90),
        p99=percentile(values, 99),
        min=float(min(values)),
        max=float(max(values)),
    )


def recall_at_k(found: Iterable[str], relevant: Sequence[str], k: int) -> float:
    """Share of the exact top-k that the approximate top-k found (1.0 when exact is empty)."""
    reference = list(relevant)[:k]
    if not reference:
        return 1.0
    approx = set(list(found)[:k])
    return sum(1 for item in reference if item in approx) / len(reference)


def rate(count: int, seconds: float) -> float:
    """count per second; 0 when no time elapsed."""
    return count / seconds if seconds > 0 else 0.0
