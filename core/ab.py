"""A/B split of search traffic between the active and a candidate version (pure, no I/O).

- Assignment: a session id hashes (SHA-256) to a bucket in [0, 10000); buckets below
  ``percent * 100`` are served by the candidate. The same session always lands on the same
  version, in every gateway process; a search without a session id goes to the active version.
- Credit: the `search` event of a session records the version that served it, so clicks in the
  session documents are credited to that version. :func:`online_metrics` folds session
  documents into click-through rate (searches with at least one click / searches) and MRR
  (mean reciprocal rank of the first click of a search, 0 for a search without clicks).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.domain import Expected
from core.ports import SessionSource, SplitStore, SplitVersions

BUCKETS = 10_000


@dataclass(frozen=True)
class ABSplit:
    candidate_version: str
    percent: float
    updated_at: datetime | None = None


@dataclass(frozen=True)
class EndedSplit:
    """A split no longer in force: when and why it ended (an operator, or automatically when
    its candidate stopped receiving new content)."""

    candidate_version: str
    percent: float
    ended_at: datetime | None
    reason: str


class InvalidSplit(ValueError):
    """The split names an unknown version, a version still being built, failed or no longer
    receiving new content, or a bad percentage."""


def bucket(session_id: str) -> int:
    digest = hashlib.sha256(session_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def choose_version(active: str | None, split: ABSplit | None, session_id: str | None) -> str | None:
    """The version that serves a search: the candidate for the session's bucket, else active."""
    if active is None or split is None or not session_id or split.candidate_version == active:
        return active
    return split.candidate_version if bucket(session_id) < round(split.percent * BUCKETS / 100) else active


def traffic_percent(version: str, active: str | None, split: ABSplit | None) -> float:
    """The share of search traffic (in percent) `version` serves: the candidate its split's
    percentage, the active version the rest, every other version none. A split whose candidate
    is the active version sends it everything."""
    share = split.percent if split and split.candidate_version != active else 0.0
    if version == active:
        return 100.0 - share
    return share if split and version == split.candidate_version else 0.0


async def configure_split(
    store: SplitStore, versions: SplitVersions, candidate_version: str, percent: float
) -> ABSplit:
    """Validate and store a split: the candidate needs a complete index that still receives new
    content (the active version or the rollback target). Stored as a compare-and-set on the state
    it was validated against: core.domain.ConcurrentChange if an activation or reindex changed
    it meanwhile."""
    if not 0.0 <= percent <= 100.0:
        raise InvalidSplit(f"percent must lie in [0, 100], not {percent}")
    active = await versions.active_version()
    rows = {row["version"]: row for row in await versions.list_versions()}
    if candidate_version not in rows:
        raise InvalidSplit(f"model version {candidate_version!r} has no index")
    status = rows[candidate_version]["status"]
    if status == "building":
        raise InvalidSplit(f"model version {candidate_version} is still being indexed")
    if status == "failed":
        raise InvalidSplit(f"model version {candidate_version} failed to index: "
                           f"{rows[candidate_version].get('reason') or 'see its reindex task'}")
    if status == "retired" and candidate_version not in await versions.writable_versions():
        raise InvalidSplit(
            f"model version {candidate_version} no longer receives new content (only the version "
            "retired last is kept current), so its index misses items")
    return await store.set_split(candidate_version, percent, Expected(active, status))


@dataclass
class VersionClicks:
    searches: int = 0
    clicked_searches: int = 0
    reciprocal_ranks: float = 0.0
    sessions: set[str] = field(default_factory=set)

    def as_metrics(self) -> dict[str, float]:
        return {
            "searches": float(self.searches),
            "clicked_searches": float(self.clicked_searches),
            "sessions": float(len(self.sessions)),
            "ctr": self.clicked_searches / self.searches if self.searches else 0.0,
            "mrr": self.reciprocal_ranks / self.searches if self.searches else 0.0,
        }


def first_click_rank(search: Mapping[str, Any]) -> int | None:
    """The best (lowest) rank clicked in a search: the rank shown, else the click's own rank."""
    shown = {r["id"]: int(r["rank"]) for r in search.get("results", [])}
    ranks = []
    for click in search.get("clicks", []):
        rank = shown.get(click.get("content_id"), click.get("rank"))
        if rank is not None and int(rank) >= 1:
            ranks.append(int(rank))
    return min(ranks) if ranks else None


def online_metrics(sessions: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per model version: searches, clicked searches, sessions, CTR and MRR of the first click."""
    per: dict[str, VersionClicks] = {}
    for doc in sessions:
        for search in doc.get("searches", []):
            version = search.get("model_version")
            if version is None:
                continue
            acc = per.setdefault(str(version), VersionClicks())
            acc.searches += 1
            acc.sessions.add(str(doc.get("_id")))
            rank = first_click_rank(search)
            if rank is not None:
                acc.clicked_searches += 1
                acc.reciprocal_ranks += 1.0 / rank
    return {version: acc.as_metrics() for version, acc in sorted(per.items())}


async def collect_online_metrics(
    source: SessionSource, since: datetime | None, max_sessions: int
) -> tuple[dict[str, dict[str, float]], int]:
    """:func:`online_metrics` over sessions whose last event is after `since`, streamed from a
    cursor and stopped after `max_sessions` (memory stays bounded); and the sessions read.
    Each batch of documents is folded in a worker thread, off the event loop."""
    per: dict[str, VersionClicks] = {}
    read = 0
    batch: list[Mapping[str, Any]] = []
    async for doc in source.iter_sessions(since, None, FOLD_BATCH):
        read += 1
        batch.append(doc)
        if len(batch) >= FOLD_BATCH:
            await asyncio.to_thread(_fold, per, batch)
            batch = []
        if read >= max_sessions:
            break
    if batch:
        await asyncio.to_thread(_fold, per, batch)
    return {version: acc.as_metrics() for version, acc in sorted(per.items())}, read


FOLD_BATCH = 256


def _fold(per: dict[str, VersionClicks], docs: Iterable[Mapping[str, Any]]) -> None:
    for doc in docs:
        for version, metrics in online_metrics([doc]).items():
            acc = per.setdefault(version, VersionClicks())
            acc.searches += int(metrics["searches"])
            acc.clicked_searches += int(metrics["clicked_searches"])
            acc.reciprocal_ranks += metrics["mrr"] * metrics["searches"]
            acc.sessions.add(str(doc.get("_id")))
