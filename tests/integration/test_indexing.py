"""content-upserted -> indexer service -> Triton -> pgvector, and search over it."""

from __future__ import annotations

import time
import uuid
from typing import Any

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer

from consumers.lag import measure_lag
from core.adapters.pgvector import PgVectorStore
from core.adapters.triton_embedder import TritonEmbedder
from core.config import Settings
from core.domain import SearchQuery
from core.kafka_auth import kafka_client_options
from core.search import search
from infra.process import Component
from producers.publisher import Publisher
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

DOCS = {
    "cat": ("Cats", "The domestic cat is a small carnivorous mammal that purrs and hunts mice."),
    "rocket": ("Rockets", "A rocket engine burns propellant to produce thrust and reach orbit."),
    "bread": ("Bread", "Bread is baked from a dough of flour and water, leavened with yeast."),
    "python": ("Python", "Python is a programming language with dynamic typing and garbage collection."),
}


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


async def publish_docs(publisher: Publisher, who: str, **extra: Any) -> None:
    await publisher.publish_many("content-upserted", [
        {"id": id_, "title": title, "text": text, "version": 1, "tenant": who,
         "metadata": {"topic": id_, "lang": "en"}, **extra}
        for id_, (title, text) in DOCS.items()
    ])


async def indexed(store: PgVectorStore, who: str, count: int) -> None:
    async def ready() -> bool:
        return await store.count_items(who) == count
    await wait_for(ready)


async def test_published_content_becomes_searchable(
    indexer_service: Component, publisher: Publisher, store: PgVectorStore, embedder: TritonEmbedder
) -> None:
    who = tenant()
    await publish_docs(publisher, who)
    await indexed(store, who, len(DOCS))
    result = await search(SearchQuery("a pet that purrs", 2, who), store.for_tenant(who), embedder)
    assert result.hits[0].id == "cat"
    assert result.model_version == await store.active_version(who)
    assert result.hits[0].metadata == {"topic": "cat", "lang": "en"}

    lineage = store.for_tenant(who)
    filtered = await search(SearchQuery("a pet that purrs", 3, who, {"topic": "bread"}), lineage, embedder)
    assert [h.id for h in filtered.hits] == ["bread"]

    hybrid = await search(SearchQuery("yeast flour dough", 3, who, mode="hybrid"), lineage, embedder)
    assert hybrid.hits[0].id == "bread" and hybrid.mode == "hybrid"


async def test_updates_deletes_and_stale_versions(
    indexer_service: Component, publisher: Publisher, store: PgVectorStore, embedder: TritonEmbedder
) -> None:
    who = tenant()
    await publish_docs(publisher, who)
    await indexed(store, who, len(DOCS))
    await publisher.publish("content-upserted", {
        "id": "rocket", "title": "Gardening", "text": "Roses need sun, water and pruning.",
        "version": 2, "tenant": who})
    await publisher.publish("content-upserted", {
        "id": "rocket", "title": "Stale", "text": "An old version that must be ignored.",
        "version": 1, "tenant": who})
    await publisher.delete_content("python", tenant=who)

    async def settled() -> bool:
        found = await store.describe(who, ["rocket", "python"])
        return "python" not in found and found.get("rocket", ("",))[0] == "Gardening"
    await wait_for(settled)
    result = await search(SearchQuery("pruning roses in the garden", 1, who), store.for_tenant(who), embedder)
    assert [h.id for h in result.hits] == ["rocket"]
    assert all(h.id != "python" for h in (await search(
        SearchQuery("programming language", 4, who), store.for_tenant(who), embedder)).hits)


async def test_a_delete_survives_an_older_upsert_replayed_after_it(
    indexer_service: Component, publisher: Publisher, store: PgVectorStore, test_settings: Settings
) -> None:
    """A tombstone and an older upsert of the same item on different partitions (librdkafka's
    default partitioner differs from the SDK's) can be consumed in either order on a replay:
    the deletion marker keeps the item deleted until a newer version arrives."""
    who = tenant()
    item = {"id": "ghost", "title": "Ghost", "text": "An item that is deleted.", "version": 3, "tenant": who}
    await publisher.publish("content-upserted", item)
    await indexed(store, who, 1)
    await publisher.delete_content("ghost", tenant=who)
    await indexed(store, who, 0)
    # The older upsert again, as a replay from another partition would deliver it after the delete.
    await publisher.publish("content-upserted", item)
    await publisher.publish("content-upserted", {**item, "version": 2})

    async def consumed() -> bool:
        lag = await measure_lag(test_settings.bootstrap_servers, "indexer", "content-upserted")
        return sum(lag.values()) == 0
    await wait_for(consumed, what="the indexer caught up")
    assert await store.count_items(who) == 0
    # A newer version is a real re-creation.
    await publisher.publish("content-upserted", {**item, "version": 4, "title": "Back"})
    await indexed(store, who, 1)
    assert (await store.describe(who, ["ghost"]))["ghost"][0] == "Back"


async def test_same_ids_in_two_tenants_stay_apart(
    indexer_service: Component, publisher: Publisher, store: PgVectorStore, embedder: TritonEmbedder
) -> None:
    first, second = tenant(), tenant()
    await publish_docs(publisher, first)
    await publisher.publish("content-upserted", {
        "id": "cat", "title": "Other cat", "text": "Heavy machinery: a Caterpillar bulldozer.",
        "version": 1, "tenant": second})
    await indexed(store, first, len(DOCS))
    await indexed(store, second, 1)
    hits = (await search(SearchQuery("bulldozer", 5, second), store.for_tenant(second), embedder)).hits
    assert [(h.id, h.title) for h in hits] == [("cat", "Other cat")]
    assert (await store.describe(first, ["cat"]))["cat"][0] == "Cats"


async def test_precomputed_vector_is_stored_as_given(
    indexer_service: Component, publisher: Publisher, store: PgVectorStore
) -> None:
    who = tenant()
    version = await store.active_version(who)
    vector = np.zeros(384, dtype=np.float32)
    vector[7] = 1.0
    await publisher.publish("content-upserted", {
        "id": "imported", "text": "text that is not embedded", "version": 1, "tenant": who,
        "vector": vector.tolist(), "model_version": version})
    await indexed(store, who, 1)
    assert version is not None
    hits = await store.vector_search(version, who, vector, 1, {})
    assert hits[0][0] == "imported" and hits[0][1] == pytest.approx(1.0, abs=1e-5)


async def test_invalid_events_go_to_the_dead_letter_topic_and_the_rest_is_indexed(
    indexer_service: Component, publisher: Publisher, store: PgVectorStore, test_settings: Settings
) -> None:
    who = tenant()
    marker = uuid.uuid4().hex
    producer = publisher._producer
    assert producer is not None
    await producer.send_and_wait("content-upserted", b"{not json", key=f"{who}/broken-{marker}".encode())
    await producer.send_and_wait(
        "content-upserted", b'{"id": "x", "version": 0, "text": ""}', key=f"{who}/x-{marker}".encode())
    await publish_docs(publisher, who)
    await indexed(store, who, len(DOCS))

    consumer = AIOKafkaConsumer(
        "content-upserted.dlq", **kafka_client_options(), bootstrap_servers=test_settings.bootstrap_servers,
        auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    letters: dict[str, dict[str, str]] = {}
    try:
        deadline = time.monotonic() + 30
        while len(letters) < 2 and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for r in records:
                    if r.key and marker in r.key.decode():
                        letters[r.key.decode()] = {k: v.decode() for k, v in r.headers}
    finally:
        await consumer.stop()
    assert set(letters) == {f"{who}/broken-{marker}", f"{who}/x-{marker}"}
    assert "invalid JSON" in letters[f"{who}/broken-{marker}"]["dlq-error"]
    reason = letters[f"{who}/x-{marker}"]["dlq-error"]
    assert "version" in reason and "text" in reason
    assert letters[f"{who}/x-{marker}"]["dlq-original-topic"] == "content-upserted"


async def test_the_same_events_replayed_leave_the_tables_identical(
    indexer_service: Component, publisher: Publisher, store: PgVectorStore, test_settings: Settings
) -> None:
    import psycopg

    who = tenant()
    events = [{"id": f"r{i}", "text": f"Replay check number {i} about rivers and lakes.", "version": 1,
               "tenant": who, "event_id": str(uuid.uuid4())} for i in range(30)]
    await publisher.publish_many("content-upserted", events)
    await indexed(store, who, 30)

    def snapshot() -> tuple[object, ...]:
        version = int(store_version)
        with psycopg.connect(test_settings.postgres_dsn) as conn:
            items = conn.execute("SELECT id, version, updated_at FROM items WHERE tenant = %s ORDER BY id",
                                 (who,)).fetchall()
            chunks = conn.execute(
                f"SELECT item_id, chunk_no, embedding::text FROM chunks_v{version} WHERE tenant = %s "
                "ORDER BY item_id, chunk_no", (who,)).fetchall()
        return tuple(items), tuple(chunks)

    store_version = await store.active_version(who)
    before = snapshot()
    await publisher.publish_many("content-upserted", events)  # the very same events again

    async def consumed() -> bool:
        lag = await measure_lag(test_settings.bootstrap_servers, "indexer", "content-upserted")
        return sum(lag.values()) == 0
    await wait_for(consumed)
    assert len(before[0]) == 30 and len(before[1]) == 30
    assert snapshot() == before


async def test_a_filtered_search_returns_k_where_post_filtering_returns_fewer(
    indexer_service: Component, publisher: Publisher, store: PgVectorStore, embedder: TritonEmbedder,
    test_settings: Settings,
) -> None:
    import psycopg
    from pgvector.psycopg import register_vector

    who = tenant()
    common = [{"id": f"c{i}", "text": f"Weather report {i}: sunny skies, light wind and mild temperatures.",
               "version": 1, "tenant": who, "metadata": {"rare": False}} for i in range(240)]
    rare = [{"id": f"x{i}", "text": f"Accounting ledger entry {i} for quarterly tax filings.",
             "version": 1, "tenant": who, "metadata": {"rare": True}} for i in range(12)]
    await publisher.publish_many("content-upserted", common + rare)
    await indexed(store, who, len(common) + len(rare))

    query = "what will the weather be like tomorrow, sunny or windy"
    result = await search(SearchQuery(query, 10, who, {"rare": True}), store.for_tenant(who), embedder)
    assert len(result.hits) == 10 and all(h.id.startswith("x") for h in result.hits)

    vector = (await embedder.embed([query], result.model_version)).vectors[0]
    with psycopg.connect(test_settings.postgres_dsn) as conn:
        register_vector(conn)
        conn.execute("SET hnsw.iterative_scan = off")
        conn.execute("SET hnsw.ef_search = 40")
        # Make the planner walk the HNSW index, as it does on large tables.
        for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
            conn.execute(f"SET {setting} = off")
        post_filtered = conn.execute(
            f"SELECT item_id FROM chunks_v{int(result.model_version)} WHERE tenant = %s "
            "AND metadata @> '{\"rare\": true}' ORDER BY embedding <=> %s LIMIT 10", (who, vector)).fetchall()
    assert len(post_filtered) < 10
