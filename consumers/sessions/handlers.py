"""Sessions: fold a batch of clicks events into session documents; request training by policy.

Free of I/O beyond the ports: a `SessionRepository` (MongoDB) and a publish function.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

from core.ports import SessionRepository, TrainingPolicyStore
from core.sessions import SessionEventModel, fold, session_key
from schemas.envelope import DEFAULT_TENANT
from schemas.training import TrainingRequested

log = logging.getLogger("flywheel.sessions")

MAX_ATTEMPTS = 10
POLICY_NAMESPACE = UUID("b8f1f0c2-61a4-4f43-9a7e-5a1f5f0e2c11")


class ConcurrentUpdates(RuntimeError):
    """A session kept changing under us; the batch is retried."""


@dataclass
class FoldReport:
    events: int = 0
    applied: int = 0
    duplicates: int = 0
    sessions_created: int = 0
    sessions_updated: int = 0
    # What the batch added, by the model version that served the search: searches, and clicks
    # attached to them (a click that arrived before its search counts once attached).
    searches: Counter[str] = field(default_factory=Counter)
    clicks: Counter[str] = field(default_factory=Counter)


def engagement(doc: dict[str, Any] | None) -> tuple[Counter[str], Counter[str]]:
    """Searches and the clicks attached to them in a session document, per serving version."""
    searches: Counter[str] = Counter()
    clicks: Counter[str] = Counter()
    for search in (doc or {}).get("searches", []):
        searches[search["model_version"]] += 1
        clicks[search["model_version"]] += len(search.get("clicks", []))
    return searches, clicks


async def fold_batch(
    events: Sequence[SessionEventModel], repo: SessionRepository, now: datetime
) -> FoldReport:
    """Apply each event once to its session document (a redelivered event changes nothing)."""
    report = FoldReport(events=len(events))
    by_session: dict[str, list[SessionEventModel]] = {}
    for event in events:
        by_session.setdefault(session_key(event.tenant, event.session_id), []).append(event)
    pending = dict(by_session)
    for _ in range(MAX_ATTEMPTS):
        if not pending:
            break
        stored = await repo.get_many(list(pending))
        conflicts: dict[str, list[SessionEventModel]] = {}
        for key, session_events in pending.items():
            before = stored.get(key)
            doc, applied = fold(before, session_events, now)
            if applied == 0:
                report.duplicates += len(session_events)
                continue
            if await repo.save(doc, before["revision"] if before else None):
                report.applied += applied
                report.duplicates += len(session_events) - applied
                (searches_before, clicks_before), (searches_after, clicks_after) = (
                    engagement(before), engagement(doc))
                report.searches.update(searches_after - searches_before)
                report.clicks.update(clicks_after - clicks_before)
                if before is None:
                    report.sessions_created += 1
                else:
                    report.sessions_updated += 1
            else:
                conflicts[key] = session_events
        pending = conflicts
    if pending:
        raise ConcurrentUpdates(f"{len(pending)} sessions kept changing concurrently")
    return report


def policy_run_id(previous_run_id: str | None, tenant: str = DEFAULT_TENANT) -> str:
    """Deterministic from the tenant's previous request, so a retried policy step asks with the
    same run id and the trainer (idempotent per run id) trains once; another tenant's differs."""
    seed = previous_run_id or "first"
    return f"auto-{uuid5(POLICY_NAMESPACE, seed if tenant == DEFAULT_TENANT else f'{tenant}/{seed}').hex}"


async def maybe_request_training(
    repo: TrainingPolicyStore,
    every_sessions: int,
    min_sessions: int,
    publish: Callable[[TrainingRequested], Awaitable[None]],
    now: datetime,
    tenant: str = DEFAULT_TENANT,
) -> str | None:
    """After `every_sessions` new sessions of `tenant` since its last request, request training
    for it (its sessions, its lineage); the run id. `repo` is that tenant's."""
    if every_sessions <= 0:
        return None
    state = await repo.policy_state()
    new_sessions = await repo.count_created_since(state.get("last_requested_at"))
    if new_sessions < every_sessions:
        return None
    previous = state.get("last_run_id")
    run_id = policy_run_id(previous, tenant)
    await publish(TrainingRequested(
        run_id=run_id, min_sessions=min_sessions, source="sessions-policy", tenant=tenant,
    ))
    # Published first: if we stop before this claim, the retry publishes the same run id.
    if not await repo.claim_policy_run(previous, run_id, now):
        log.info("training policy: another instance recorded the request first")
    log.info("training policy: %d new sessions, requested training run %s", new_sessions, run_id)
    return run_id
