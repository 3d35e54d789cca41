"""Sources: Debezium change events mapped to content items, and adding/removing a source."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from core.source_admin import SourceExists, UnknownSource
from core.sources import (
    Delete,
    SourceError,
    SourceSpec,
    change_source,
    connector_config,
    map_change,
    mask_password,
)
from schemas.content import ContentUpserted
from tests.unit.source_fakes import FakeDatabase, admin

SPEC = SourceSpec(
    name="articles", tenant="news", dsn="postgresql://cdc:s3cret@db.internal:5432/cms",
    table="public.articles", id_column="id", title_column="headline", text_columns=["lede", "body"],
    metadata_columns=["section", "year"],
)


def change(op: str, row: dict[str, Any], lsn: int = 1000) -> dict[str, Any]:
    source = {"name": "cdc.articles", "lsn": lsn, "schema": "public", "table": "articles"}
    return {"op": op, "before": row if op == "d" else None, "after": None if op == "d" else row,
            "source": source}


ROW = {"id": 7, "headline": "Rates rise", "lede": "The bank moved.", "body": "By a quarter point.",
       "section": "economy", "year": 2026, "secret": "x"}


@pytest.mark.parametrize("op", ["r", "c", "u"])
def test_snapshot_create_and_update_become_an_upsert_versioned_by_the_log_position(op: str) -> None:
    event = map_change(change(op, ROW, lsn=123456), SPEC)
    assert isinstance(event, ContentUpserted)
    assert (event.tenant, event.id, event.version) == ("news", "7", 123456)
    assert event.title == "Rates rise"
    assert event.text == "The bank moved.\n\nBy a quarter point."
    assert event.metadata == {"section": "economy", "year": 2026, "source": "articles"}
    assert event.key == "news/7"
    # The same change mapped twice is the same event (idempotent downstream).
    assert map_change(change(op, ROW, lsn=123456), SPEC).event_id == event.event_id


def test_a_delete_becomes_a_tombstone_of_the_item() -> None:
    assert map_change(change("d", {"id": 7}), SPEC) == Delete("news", "7")


def test_a_template_and_a_version_column() -> None:
    spec = SPEC.model_copy(update={"text_columns": [], "text_template": "{headline}: {body}",
                                   "version_column": "rev"})
    event = map_change(change("u", {**ROW, "rev": 9}), spec)
    assert isinstance(event, ContentUpserted)
    assert (event.text, event.version) == ("Rates rise: By a quarter point.", 9)


@pytest.mark.parametrize(("row", "reason"), [
    ({**ROW, "id": None}, "row has no 'id'"),
    ({**ROW, "body": {"nested": True}}, "column 'body' holds dict, not text"),
    ({**ROW, "lede": "", "body": None}, "the row's text is empty"),
    ({**ROW, "id": "x" * 600}, "is not a valid item"),
])
def test_bad_rows_are_refused_with_a_reason_naming_the_column(row: dict[str, Any], reason: str) -> None:
    with pytest.raises(SourceError, match=reason):
        map_change(change("c", row), SPEC)


def test_a_change_names_its_source_and_an_unknown_event_is_refused() -> None:
    assert change_source(change("c", ROW)) == "articles"
    with pytest.raises(SourceError):
        change_source({"op": "c", "after": ROW})
    with pytest.raises(SourceError, match="unknown Debezium operation"):
        map_change({**change("c", ROW), "op": "t"}, SPEC)


@pytest.mark.parametrize(("update", "field"), [
    ({"table": "articles"}, "table"),
    ({"name": "Bad-Name"}, "name"),
    ({"text_template": "{headline.__class__}"}, "text_template"),
    ({"dsn": "http://example"}, "dsn"),
    ({"id_column": "id; drop table x"}, "id_column"),
])
def test_specs_are_validated_with_errors_naming_the_field(update: dict[str, Any], field: str) -> None:
    data = SPEC.model_dump() | update
    with pytest.raises((ValidationError, SourceError)) as error:
        SourceSpec(**data)
    assert field in str(error.value) or "dsn" in str(error.value)


def test_connector_config_and_the_password_is_never_shown() -> None:
    config = connector_config(SPEC, "cdc", 3, "kafka:9092")
    assert config["connector.class"].endswith("PostgresConnector")
    assert (config["database.hostname"], config["database.port"], config["database.dbname"]) == (
        "db.internal", "5432", "cms")
    assert config["topic.prefix"] == "cdc.articles"
    assert config["table.include.list"] == "public.articles"
    assert config["slot.name"] == "flywheel_articles"
    assert SPEC.public()["dsn"] == "postgresql://cdc:***@db.internal:5432/cms"
    assert mask_password("postgresql://u@h/db") == "postgresql://u@h/db"


async def test_adding_a_source_stores_it_creates_its_topics_and_registers_the_connector() -> None:
    sources, _, connect, seen = admin()
    shown = await sources.add(SPEC)
    assert shown["connector"] == {"state": "RUNNING", "tasks": ["RUNNING"]}
    assert shown["topic"] == "cdc.articles.public.articles"
    assert "s3cret" not in str(shown)
    assert seen["topics"] == {"cdc.articles.public.articles": 3, "cdc.articles.public.articles.dlq": 3}
    assert "flywheel-source-articles" in connect.connectors
    with pytest.raises(SourceExists):
        await sources.add(SPEC)


async def test_a_database_that_cannot_be_captured_is_refused_and_nothing_is_registered() -> None:
    sources, store, connect, _ = admin(FakeDatabase("set wal_level=logical"))
    with pytest.raises(SourceError, match="wal_level"):
        await sources.add(SPEC)
    assert store.specs == {} and connect.connectors == {}


async def test_removing_keeps_or_deletes_the_items_and_another_tenant_cannot_remove() -> None:
    sources, store, connect, seen = admin()
    await sources.add(SPEC)
    store.items[("news", "articles")] = ["1", "2"]
    with pytest.raises(UnknownSource):
        await sources.remove("articles", tenant="sports")
    assert "articles" in store.specs
    result = await sources.remove("articles", delete_items=True, tenant="news")
    assert result == {"name": "articles", "removed": True, "items_deleted": 2}
    assert seen["deleted"] == [("news", "1"), ("news", "2")]
    assert connect.connectors == {} and store.specs == {}
