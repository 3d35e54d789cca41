"""The exported JSON Schema / AsyncAPI files are deterministic and committed up to date."""

from __future__ import annotations

from pathlib import Path

from core.config import REPO_ROOT
from schemas.export import asyncapi_document, rendered_docs, stale_docs, write_docs
from schemas.topics import TOPICS


def test_export_is_deterministic(tmp_path: Path) -> None:
    first = rendered_docs(tmp_path)
    assert first == rendered_docs(tmp_path)
    written = write_docs(tmp_path)
    assert sorted(written) == sorted(first)
    assert write_docs(tmp_path) == []  # nothing changes on a second run
    assert stale_docs(tmp_path) == []


def test_asyncapi_covers_every_topic_and_event() -> None:
    doc = asyncapi_document()
    assert doc["asyncapi"] == "3.0.0"
    addresses = {channel["address"] for channel in doc["channels"].values()}
    assert addresses == set(TOPICS)
    events = {model.__name__ for spec in TOPICS.values() for model in spec.events}
    assert events <= set(doc["components"]["messages"]) and events <= set(doc["components"]["schemas"])


def test_committed_docs_are_current() -> None:
    stale = stale_docs(REPO_ROOT / "docs")
    assert not stale, f"stale schema docs {stale}: run `flywheel schemas export` and commit docs/"
