"""Search sessions: folding clicks events into one document per session (pure, no I/O).

A session document (MongoDB collection `sessions`, `_id` = ``<tenant>/<session_id>``)::

    {"_id", "tenant", "session_id", "first_event_at", "last_event_at", "created_at",
     "revision",                      # optimistic concurrency: bumped on every write
     "event_ids": [...],              # events already applied: the idempotency guard
     "model_versions": [...],         # versions that served the session's searches
     "searches": [{"event_id", "query", "at", "model_version",
                   "results": [{"id", "rank", "score"}],
                   "clicks": [{"event_id", "content_id", "rank", "at"}],
                   "conversions": [{"event_id", "content_id", "value", "at"}]}],
     "unattached": [...],             # clicks/conversions that arrived before any search
     "size_bytes": n,                 # the document's BSON size, kept up to date by the fold
     "dropped_events": n}             # events not stored because the session is full

A session is bounded: at most `MAX_EVENTS_PER_SESSION` events and `MAX_SESSION_BYTES` of BSON
(MongoDB refuses documents over 16 MiB, which would stop the clicks partition). An event that
would pass either bound is not stored, only counted in `dropped_events` (a redelivery of a
dropped event is counted again).

Each search event opens a new query block. A click or conversion attaches to the search it
names (`search_event_id`), else to the latest search whose results contain the item, else
to the latest search; before any search it waits in `unattached` and joins the search that
names it, or the first one that shows the item.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import bson

from schemas.clicks import ClickEvent, ConversionEvent, SearchEvent

SessionDoc = dict[str, Any]
SessionEventModel = SearchEvent | ClickEvent | ConversionEvent

# A session is bounded: beyond this many events or bytes, later ones are counted but not stored.
MAX_EVENTS_PER_SESSION = 2000
MAX_SESSION_BYTES = 8 * 1024 * 1024
# What an event adds besides its own entry: its id in `event_ids`, array indexes, a model version.
_EVENT_OVERHEAD_BYTES = 128


def bson_size(value: dict[str, Any]) -> int:
    return len(bson.encode(value))


def session_key(tenant: str, session_id: str) -> str:
    return f"{tenant}/{session_id}"


def new_session(tenant: str, session_id: str, now: datetime) -> SessionDoc:
    doc: SessionDoc = {
        "_id": session_key(tenant, session_id), "tenant": tenant, "session_id": session_id,
        "first_event_at": None, "last_event_at": None, "created_at": now, "revision": 0,
        "event_ids": [], "model_versions": [], "searches": [], "unattached": [], "dropped_events": 0,
        "size_bytes": 0,
    }
    doc["size_bytes"] = bson_size(doc) + 64  # room for the dates and revision set later
    return doc


def _event_size(event: SessionEventModel) -> int:
    return bson_size(event.model_dump(mode="json", exclude={"source", "schema_version"})) \
        + _EVENT_OVERHEAD_BYTES


def _find_search(doc: SessionDoc, content_id: str, search_event_id: str | None) -> dict[str, Any] | None:
    searches: list[dict[str, Any]] = doc["searches"]
    if search_event_id is not None:
        for search in searches:
            if search["event_id"] == search_event_id:
                return search
    for search in reversed(searches):
        if any(r["id"] == content_id for r in search["results"]):
            return search
    return searches[-1] if searches and search_event_id is None else None


def _attach(search: dict[str, Any], entry: dict[str, Any]) -> None:
    kind = entry.pop("kind")
    entry.pop("search_event_id", None)
    search["clicks" if kind == "click" else "conversions"].append(entry)


def apply_event(doc: SessionDoc, event: SessionEventModel) -> bool:
    """Fold one event into `doc` in place; False when it was applied before (a redelivery)."""
    event_id = str(event.event_id)
    if event_id in doc["event_ids"]:
        return False
    size = _event_size(event)
    if len(doc["event_ids"]) >= MAX_EVENTS_PER_SESSION or doc["size_bytes"] + size > MAX_SESSION_BYTES:
        doc["dropped_events"] = doc.get("dropped_events", 0) + 1
        return False
    doc["size_bytes"] += size
    doc["event_ids"].append(event_id)
    at = event.occurred_at
    if doc["first_event_at"] is None or at < doc["first_event_at"]:
        doc["first_event_at"] = at
    if doc["last_event_at"] is None or at > doc["last_event_at"]:
        doc["last_event_at"] = at

    if isinstance(event, SearchEvent):
        search = {
            "event_id": event_id, "query": event.query, "at": at, "model_version": event.model_version,
            "results": [{"id": r.id, "rank": r.rank, "score": r.score} for r in event.results],
            "clicks": [], "conversions": [],
        }
        doc["searches"].append(search)
        if event.model_version not in doc["model_versions"]:
            doc["model_versions"].append(event.model_version)
        shown = {r.id for r in event.results}
        waiting = []
        for early in doc["unattached"]:
            if early.get("search_event_id") == event_id or (
                early.get("search_event_id") is None and early["content_id"] in shown
            ):
                _attach(search, dict(early))
            else:
                waiting.append(early)
        doc["unattached"] = waiting
        return True

    ref = str(event.search_event_id) if event.search_event_id is not None else None
    entry: dict[str, Any]
    if isinstance(event, ClickEvent):
        entry = {"kind": "click", "event_id": event_id, "content_id": event.content_id,
                 "rank": event.rank, "at": at}
    else:
        entry = {"kind": "conversion", "event_id": event_id, "content_id": event.content_id,
                 "value": event.value, "at": at}
    target = _find_search(doc, event.content_id, ref)
    if target is None:
        doc["unattached"].append({**entry, "search_event_id": ref})
    else:
        _attach(target, entry)
    return True


def fold(
    doc: SessionDoc | None, events: Iterable[SessionEventModel], now: datetime
) -> tuple[SessionDoc, int]:
    """A copy of `doc` (or a new session) with `events` applied; and how many were new."""
    events = list(events)
    if doc is None:
        first = events[0]
        result = new_session(first.tenant, first.session_id, now)
    else:
        result = copy.deepcopy(doc)
        if "size_bytes" not in result:  # written before sessions counted their bytes
            result["size_bytes"] = bson_size(result)
    applied = sum(apply_event(result, event) for event in events)
    return result, applied


