"""Which model versions the model server keeps loaded (pure, no I/O).

Triton keeps a version loaded only while some tenant serves it, builds it, tests it in an A/B
split or can roll back to it (core.adapters.pgvector.VersionLifecycle.served_versions), plus
the base version and any version just deployed whose reindex has not started yet. Every other
version is parked: moved out of the model's repository directory, so that the next load
unloads it. A parked version that is needed again (a tenant reindexes it) is restored and
loaded on the next reconciliation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from core.serving import BASE_SERVING_VERSION


@dataclass(frozen=True)
class ResidencyPlan:
    park: frozenset[int]
    restore: frozenset[int]

    @property
    def changes(self) -> bool:
        return bool(self.park or self.restore)


def plan_residency(
    in_repository: Iterable[int], parked: Iterable[int], needed: Iterable[str], protected: Iterable[int] = (),
) -> ResidencyPlan:
    """Park the versions in the repository nobody needs; restore the parked ones needed again.
    `needed`: the serving versions some tenant uses; `protected`: versions never parked now (a
    deploy whose reindex has not started). The base version is always kept."""
    keep = {int(v) for v in needed if v.isdigit()} | {int(BASE_SERVING_VERSION)} | set(protected)
    return ResidencyPlan(
        park=frozenset(v for v in in_repository if v not in keep),
        restore=frozenset(v for v in parked if v in keep),
    )
