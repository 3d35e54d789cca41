"""Fair turns between tenants for queued work (training runs, reindexes): pure, no I/O.

A worker that is free takes the next request of the tenant whose turn it is: the tenant
served longest ago (never served first), and between tenants equally due, the one whose
oldest queued request is oldest. Within a tenant, its requests run in the order they were
accepted. So a tenant that queued many requests gets one run, then every other tenant with a
queued request gets one, and so on: no tenant's request waits behind another tenant's queue.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

NEVER = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Queued:
    """A request waiting for a worker."""

    id: str
    tenant: str
    accepted_at: datetime


def turn_order(queued: Sequence[Queued], last_started: Mapping[str, datetime]) -> list[Queued]:
    """Each tenant's oldest queued request, in the order the tenants' turns come."""
    oldest: dict[str, Queued] = {}
    for request in sorted(queued, key=lambda q: (q.accepted_at, q.id)):
        oldest.setdefault(request.tenant, request)
    return sorted(oldest.values(), key=lambda q: (last_started.get(q.tenant, NEVER), q.accepted_at, q.id))
