"""Event contracts: validation lists every bad field, versions follow the policy."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from schemas import compat
from schemas.clicks import ClickEvent, ConversionEvent, SearchEvent
from schemas.codec import (
    EventValidationError,
    SchemaVersionError,
    content_key,
    decode,
    decode_record,
    encode,
    parse_content_key,
    validate,
)
from schemas.content import ContentUpserted
from schemas.examples import EXAMPLES
from schemas.model_published import ModelPublished
from schemas.reindex import ReindexRequested
from schemas.topics import TOPICS
from schemas.training import TrainingRequested

MODELS = {
    "content-upserted": ContentUpserted, "search": SearchEvent, "click": ClickEvent,
    "conversion": ConversionEvent, "training-requested": TrainingRequested,
    "model-published": ModelPublished, "reindex-requested": ReindexRequested,
}


def errors_of(topic: str, data: Any) -> dict[str, str]:
    with pytest.raises(EventValidationError) as caught:
        validate(topic, data)
    return {e.loc: e.msg for e in caught.value.errors}


@pytest.mark.parametrize(("topic", "data"), [(t, d) for t, ds in EXAMPLES.items() for d in ds])
def test_every_example_round_trips_through_bytes(topic: str, data: dict[str, Any]) -> None:
    event = validate(topic, data)
    assert isinstance(event, MODELS[event.type])
    again = decode(topic, encode(event))
    assert again == event
    body = json.loads(encode(event))
    assert {"event_id", "type", "schema_version", "occurred_at", "tenant", "source"} <= set(body)


def test_envelope_defaults_are_filled() -> None:
    event = validate("content-upserted", {"id": "a", "text": "t", "version": 1})
    assert event.type == "content-upserted" and event.schema_version == "1.0"
    assert event.tenant == "default" and event.source == "unknown"
    assert event.occurred_at.tzinfo is not None


def test_content_errors_list_every_bad_field() -> None:
    errors = errors_of("content-upserted", {
        "id": "", "version": 0, "metadata": "not a dict", "vector": [1.0], "colour": "red",
        "occurred_at": "2024-05-01T00:00:00", "tenant": "a b",
    })
    assert set(errors) == {"id", "text", "version", "metadata", "colour", "occurred_at", "tenant"}
    assert "timezone" in errors["occurred_at"]
    assert "Extra inputs" in errors["colour"]


def test_vector_needs_model_version_and_finite_numbers() -> None:
    assert "model_version is required" in str(
        errors_of("content-upserted", {"id": "a", "text": "t", "version": 1, "vector": [0.1]})
    )
    with pytest.raises(EventValidationError):
        validate("content-upserted", {"id": "a", "text": "t", "version": 1, "vector": [float("nan")],
                                      "model_version": "m"})


def test_clicks_errors_name_nested_fields_without_the_union_tag() -> None:
    errors = errors_of("clicks", {"type": "search", "session_id": "s", "query": "",
                                  "results": [{"id": "a", "rank": 0, "score": "high"}]})
    assert set(errors) == {"query", "results[0].rank", "results[0].score", "model_version"}


def test_clicks_needs_a_known_type() -> None:
    # The tag named as the field `type`, with the types there are (not "Unable to extract tag").
    assert errors_of("clicks", {"session_id": "s"}) == {
        "type": "is required: one of 'search', 'click', 'conversion'"}
    assert errors_of("clicks", {"type": "view", "session_id": "s"}) == {
        "type": "'view' is not a type of this topic: one of 'search', 'click', 'conversion'"}


def test_training_window_must_be_ordered() -> None:
    errors = errors_of("training-requested", {"run_id": "r", "since": "2024-05-02T00:00:00Z",
                                              "until": "2024-05-01T00:00:00Z"})
    assert "since must be before until" in str(errors)


def test_reindex_source_is_content_upserted_only() -> None:
    assert set(errors_of("reindex-requested", {"model_version": "m", "source_topic": "clicks"})) == {
        "source_topic"
    }


def test_non_object_and_bad_json() -> None:
    assert errors_of("clicks", [1, 2]) == {"(value)": "expected a JSON object, got list"}
    with pytest.raises(EventValidationError, match="invalid JSON"):
        decode("clicks", b"{nope")


def test_tombstones_only_where_the_registry_allows_them() -> None:
    assert decode("content-upserted", None) is None
    with pytest.raises(EventValidationError, match="tombstone"):
        decode("clicks", None)


# --- schema_version policy ------------------------------------------------------------------
@pytest.mark.parametrize(("version", "current", "expected"), [
    ("1.0", "1.0", compat.Compatibility.SAME),
    ("1.0", "1.2", compat.Compatibility.OLDER_MINOR),
    ("1.3", "1.2", compat.Compatibility.NEWER_MINOR),
    ("1.9", "2.1", compat.Compatibility.PREVIOUS_MAJOR),
])
def test_accepted_versions(version: str, current: str, expected: compat.Compatibility) -> None:
    assert compat.check(version, current) is expected


@pytest.mark.parametrize(("version", "current"), [
    ("2.0", "1.0"), ("1.0", "3.0"), ("0.9", "1.0"), ("1", "1.0"), ("v1.0", "1.0"),
])
def test_rejected_versions(version: str, current: str) -> None:
    with pytest.raises(compat.IncompatibleSchemaVersion):
        compat.check(version, current)


def test_newer_minor_fields_are_ignored_other_majors_rejected() -> None:
    event = validate("content-upserted", {"id": "a", "text": "t", "version": 1, "schema_version": "1.4",
                                          "added_in_1_4": True})
    assert event.schema_version == "1.4"
    with pytest.raises(SchemaVersionError, match=r"accepts 1\.x"):
        validate("content-upserted", {"id": "a", "text": "t", "version": 1, "schema_version": "2.0"})


# --- keys -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("tenant", "item_id", "key"), [
    ("default", "a1", "a1"), ("acme", "a1", "acme/a1"), ("default", "docs/x.md", "default/docs/x.md"),
    ("acme", "docs/x.md", "acme/docs/x.md"),
])
def test_content_keys_round_trip(tenant: str, item_id: str, key: str) -> None:
    assert content_key(tenant, item_id) == key
    assert parse_content_key(key.encode()) == (tenant, item_id)


def test_registry_keys() -> None:
    assert TOPICS["clicks"].key_of(validate("clicks", EXAMPLES["clicks"][1])) == "s-9f2"
    imported = validate("content-upserted", EXAMPLES["content-upserted"][1])
    assert TOPICS["content-upserted"].key_of(imported) == "acme/doc-43"


def _record(value: bytes | None, key: bytes | None = b"a1", offset: int = 7) -> SimpleNamespace:
    return SimpleNamespace(topic="content-upserted", partition=2, offset=offset, timestamp=1714521600000,
                           key=key, value=value)


def test_decode_record_derives_a_stable_event_id_from_coordinates() -> None:
    minimal = b'{"id": "a1", "text": "t", "version": 1}'
    first, again, other = (decode_record(_record(minimal)), decode_record(_record(minimal)),
                           decode_record(_record(minimal, offset=8)))
    assert first is not None and again is not None and other is not None
    assert first.event_id == again.event_id != other.event_id
    assert first.occurred_at == datetime(2024, 5, 1, tzinfo=UTC)


def test_decode_record_rejects_a_key_that_does_not_match_the_value() -> None:
    with pytest.raises(EventValidationError, match="does not match"):
        decode_record(_record(b'{"id": "a1", "text": "t", "version": 1, "tenant": "acme"}', key=b"a1"))


def test_a_search_event_shows_at_most_200_results() -> None:
    import pydantic

    from schemas.clicks import ShownResult

    def shown(n: int) -> list[ShownResult]:
        return [ShownResult(id=f"i{r}", rank=r, score=0.5) for r in range(1, n + 1)]

    assert len(SearchEvent(session_id="s", query="q", model_version="1", results=shown(200)).results) == 200
    with pytest.raises(pydantic.ValidationError, match="200"):
        SearchEvent(session_id="s", query="q", model_version="1", results=shown(201))


def test_errors_inside_metadata_name_the_keys_the_sender_wrote() -> None:
    # Not pydantic's `metadata.b.list[1].dict.c.float`: the JSON types it tried are left out.
    metadata = {"float": float("nan"), "b": [1, {"c": float("inf")}]}
    errors = errors_of("content-upserted", {"id": "x", "text": "t", "version": 1, "tenant": "t",
                                            "metadata": metadata})
    assert set(errors) == {"metadata.float", "metadata.b[1].c"}
