"""Sources against the real stack: a PostgreSQL table captured by Debezium through a real Kafka
Connect worker, mapped by the sources service, indexed and searchable."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
import pytest_asyncio

from core.adapters.pgvector import PgVectorStore
from core.adapters.triton_embedder import TritonEmbedder
from core.bootstrap import build_source_admin
from core.config import Settings
from core.domain import SearchQuery
from core.search import search
from core.source_admin import SourceAdmin
from core.sources import SourceSpec, change_topic, slot_name
from infra.process import Component
from producers.publisher import Publisher
from tests.helpers import wait_for
from tests.integration.kafka_helpers import read_from

pytestmark = pytest.mark.integration

ROWS = 300
DATABASE = "cdc_source"


def dsn(settings: Settings, database: str = DATABASE) -> str:
    return f"postgresql://{settings.postgres_user}@{settings.host}:{settings.postgres_port}/{database}"


def execute(settings: Settings, statement: str, params: Any = None, database: str = DATABASE) -> list[Any]:
    with psycopg.connect(dsn(settings, database), autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


@pytest.fixture(scope="module")
def source_table(postgres: Component, test_settings: Settings) -> str:
    """A table of `ROWS` articles in another database of the test PostgreSQL."""
    if not execute(test_settings, "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,), "postgres"):
        execute(test_settings, f"CREATE DATABASE {DATABASE}", database="postgres")
    table = f"articles_{uuid.uuid4().hex[:8]}"
    execute(test_settings, f"CREATE TABLE public.{table} (id int PRIMARY KEY, headline text, "
                           "body text, section text)")
    with psycopg.connect(dsn(test_settings), autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(f"INSERT INTO public.{table} VALUES (%s, %s, %s, %s)", [
            (i, f"Article {i}", f"Routine report number {i} about municipal budgets.", "city")
            for i in range(1, ROWS + 1)])
    return table


@pytest_asyncio.fixture(scope="module")
async def admin(
    connect: Component, sources_service: Component, indexer_service: Component, publisher: Publisher,
    test_settings: Settings,
) -> AsyncIterator[SourceAdmin]:
    async def delete_items(tenant: str, ids: list[str]) -> int:
        for item_id in ids:
            await publisher.delete_content(item_id, tenant)
        return len(ids)

    sources = build_source_admin(test_settings, delete_items)
    yield sources
    await sources.close()


async def item_text(store: PgVectorStore, tenant: str, item_id: str) -> str | None:
    async with store.pool.connection() as conn:
        row = await (await conn.execute(
            "SELECT text FROM items WHERE tenant = %s AND id = %s", (tenant, item_id))).fetchone()
    return None if row is None else str(row[0])


async def test_a_table_is_snapshotted_then_follows_updates_deletes_and_a_worker_restart(
    admin: SourceAdmin, source_table: str, store: PgVectorStore, embedder: TritonEmbedder,
    connect: Component, test_settings: Settings,
) -> None:
    tenant = f"src-{uuid.uuid4().hex[:8]}"
    name = f"s_{uuid.uuid4().hex[:8]}"
    spec = SourceSpec(name=name, tenant=tenant, dsn=dsn(test_settings), table=f"public.{source_table}",
                      id_column="id", title_column="headline", text_columns=["body"],
                      metadata_columns=["section"])
    shown = await admin.add(spec)
    assert shown["connector"]["state"] in ("RUNNING", "UNASSIGNED")

    async def count(expected: int) -> bool:
        return await store.count_items(tenant) == expected

    # The snapshot: every row becomes a searchable item.
    await wait_for(lambda: count(ROWS), timeout_s=300, what=f"{ROWS} snapshotted rows indexed")
    described = await store.describe(tenant, ["42"])
    assert described["42"] == ("Article 42", {"section": "city", "source": name})

    # An UPDATE changes what search returns.
    execute(test_settings, f"UPDATE public.{source_table} SET body = %s WHERE id = 5",
            ("A zebra escaped from the zoo and crossed the river at dawn.",))

    async def updated() -> bool:
        return "zebra" in (await item_text(store, tenant, "5") or "")

    await wait_for(updated, timeout_s=120, what="the update indexed")
    result = await search(SearchQuery("zebra escaped from the zoo", 3, tenant), store.for_tenant(tenant),
                          embedder)
    assert result.hits[0].id == "5"

    # A DELETE removes the item.
    execute(test_settings, f"DELETE FROM public.{source_table} WHERE id = 7")
    await wait_for(lambda: count(ROWS - 1), timeout_s=120, what="the delete applied")
    assert await item_text(store, tenant, "7") is None

    # A bad row (no text) is parked with the reason; the rows after it still arrive.
    execute(test_settings, f"INSERT INTO public.{source_table} VALUES (1000, 'Empty', NULL, 'city')")
    execute(test_settings, f"INSERT INTO public.{source_table} VALUES (1001, 'After', 'Still here.', 'city')")
    await wait_for(lambda: count(ROWS), timeout_s=120, what="the row after a bad one indexed")
    letters = await read_from(test_settings.bootstrap_servers, f"{change_topic(spec, 'cdc')}.dlq")
    reasons = [dict(r.headers).get("dlq-error", b"").decode() for r in letters]
    assert any("the row's text is empty" in reason for reason in reasons), reasons

    # Rows written while the Connect worker is down arrive after it restarts, once each.
    await asyncio.to_thread(connect.stop)
    execute(test_settings, f"INSERT INTO public.{source_table} "
                           "SELECT i, 'Late ' || i, 'Written while the worker was down.', 'late' "
                           "FROM generate_series(2001, 2010) AS i")
    execute(test_settings, f"UPDATE public.{source_table} SET body = 'Changed offline.' WHERE id = 8")
    await asyncio.to_thread(connect.start)
    await wait_for(lambda: count(ROWS + 10), timeout_s=240, what="rows written while Connect was down")

    async def offline_update() -> bool:
        return await item_text(store, tenant, "8") == "Changed offline."

    await wait_for(offline_update, timeout_s=120, what="the update made while Connect was down")

    # Removing the source stops the capture and keeps the items; the replication slot is gone.
    assert (await admin.remove(name))["items_deleted"] == 0
    assert not execute(test_settings, "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s",
                       (slot_name(name),))
    execute(test_settings, f"INSERT INTO public.{source_table} VALUES (3000, 'Unseen', 'Not seen.', 'x')")
    await asyncio.sleep(5)
    assert await store.count_items(tenant) == ROWS + 10
    assert await item_text(store, tenant, "3000") is None


async def test_removing_a_source_with_its_items_deletes_them_from_the_index(
    admin: SourceAdmin, store: PgVectorStore, test_settings: Settings,
) -> None:
    tenant, name = f"src-{uuid.uuid4().hex[:8]}", f"s_{uuid.uuid4().hex[:8]}"
    table = f"notes_{uuid.uuid4().hex[:8]}"
    execute(test_settings, f"CREATE TABLE public.{table} (id text PRIMARY KEY, body text, rev int)")
    execute(test_settings, f"INSERT INTO public.{table} VALUES ('a', 'First note.', 1), ('b', 'Second.', 1)")
    await admin.add(SourceSpec(name=name, tenant=tenant, dsn=dsn(test_settings), table=f"public.{table}",
                               id_column="id", text_template="Note: {body}", version_column="rev"))

    async def count(expected: int) -> bool:
        return await store.count_items(tenant) == expected

    await wait_for(lambda: count(2), timeout_s=240, what="the notes indexed")
    assert await item_text(store, tenant, "a") == "Note: First note."
    assert (await admin.remove(name, delete_items=True))["items_deleted"] == 2
    await wait_for(lambda: count(0), timeout_s=120, what="the source's items deleted")
    assert await admin.list_sources(tenant) == []
