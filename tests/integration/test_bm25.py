"""BM25 inside PostgreSQL (core/adapters/pgvector/bm25.py) against a BM25 computed by hand on a
tiny corpus: the ranking and scores, per-tenant statistics kept through updates and deletes,
the fill of a database from before BM25, and hybrid search fusing it with the vector ranking."""

from __future__ import annotations

import math
import uuid

import pytest

from core.adapters.pgvector import PgVectorStore
from core.adapters.pgvector.bm25 import COMPACT_EVERY, K1, B
from core.adapters.triton_embedder import TritonEmbedder
from core.domain import SearchQuery
from core.fusion import FUSION_DEPTH, convex_fusion
from core.search import search
from infra.process import Component
from producers.publisher import Publisher
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

# (title, text), in words the `english` analyser keeps as they are ("the", "and", "a" are stop
# words), so their terms can be counted by hand below.
DOCS = {
    "d1": ("fox", "red fox red fox dog"),
    "d2": ("dog", "blue dog sun"),
    "d3": ("tree", "red tree red tree red bird"),
    "d4": ("cat", "the cat and a cat"),
}
# The terms of each document with their counts, by hand.
TERMS = {
    "d1": {"fox": 3, "red": 2, "dog": 1},
    "d2": {"dog": 2, "blue": 1, "sun": 1},
    "d3": {"tree": 3, "red": 3, "bird": 1},
    "d4": {"cat": 3},
}


def bm25(terms: dict[str, dict[str, int]], query: list[str]) -> list[tuple[str, float]]:
    """Okapi BM25 with Lucene's idf, k1 = 1.2, b = 0.75, over the distinct query terms."""
    n = len(terms)
    lengths = {doc: sum(counts.values()) for doc, counts in terms.items()}
    avgdl = sum(lengths.values()) / n
    scores: dict[str, float] = {}
    for term in set(query):
        df = sum(1 for counts in terms.values() if term in counts)
        if not df:
            continue
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        for doc, counts in terms.items():
            tf = counts.get(term, 0)
            if tf:
                norm = tf + K1 * (1 - B + B * lengths[doc] / avgdl)
                scores[doc] = scores.get(doc, 0.0) + idf * tf * (K1 + 1) / norm
    return sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))


def tenant() -> str:
    return f"bm25-{uuid.uuid4().hex[:10]}"


async def write(store: PgVectorStore, who: str, docs: dict[str, tuple[str, str]], version: int = 1,
                metadata: str = "{}") -> None:
    """Items as the indexer writes them (its INSERT .. ON CONFLICT DO UPDATE), without vectors."""
    async with store.pool.connection() as conn:
        for item_id, (title, text) in docs.items():
            await conn.execute(
                "INSERT INTO items (tenant, id, title, text, metadata, version) "
                "VALUES (%s, %s, %s, %s, %s::jsonb, %s) ON CONFLICT (tenant, id) DO UPDATE SET "
                "title = EXCLUDED.title, text = EXCLUDED.text, metadata = EXCLUDED.metadata, "
                "version = EXCLUDED.version WHERE items.version < EXCLUDED.version",
                (who, item_id, title, text, metadata, version))


def assert_ranking(got: list[tuple[str, float]], expected: list[tuple[str, float]]) -> None:
    assert [item for item, _ in got] == [item for item, _ in expected]
    assert [score for _, score in got] == pytest.approx([score for _, score in expected], rel=1e-9)


async def test_bm25_ranking_equals_a_hand_computed_bm25(store: PgVectorStore) -> None:
    who, other = tenant(), tenant()
    await write(store, who, DOCS)
    # Another tenant's items weigh nothing in this tenant's statistics.
    await write(store, other, {f"o{i}": ("fox", "fox fox sun") for i in range(5)})
    query = "the red fox and a dog"
    expected = bm25(TERMS, ["red", "fox", "dog"])
    assert [item for item, _ in expected] == ["d1", "d2", "d3"]
    assert_ranking(await store.text_search(who, query, 10, {}), expected)
    assert_ranking(await store.text_search(who, query, 2, {}), expected[:2])
    assert await store.text_search(who, "the and a", 10, {}) == []

    # A new text changes the item's terms, its length and the tenant's average length.
    await write(store, who, {"d2": ("dog", "dog dog dog red")}, version=2)
    terms = {**TERMS, "d2": {"dog": 4, "red": 1}}
    assert_ranking(await store.text_search(who, query, 10, {}), bm25(terms, ["red", "fox", "dog"]))
    # A replayed or metadata-only write leaves BM25 as it was.
    await write(store, who, {"d2": ("dog", "dog dog dog red")}, version=2)
    await write(store, who, {"d2": ("dog", "dog dog dog red")}, version=3, metadata='{"lang": "en"}')
    assert_ranking(await store.text_search(who, query, 10, {}), bm25(terms, ["red", "fox", "dog"]))
    # Filters keep their meaning: only items whose metadata contains them.
    assert_ranking(await store.text_search(who, query, 10, {"lang": "en"}),
                   [pair for pair in bm25(terms, ["red", "fox", "dog"]) if pair[0] == "d2"])

    async with store.pool.connection() as conn:
        await conn.execute("DELETE FROM items WHERE tenant = %s AND id = 'd1'", (who,))
    del terms["d1"]
    assert_ranking(await store.text_search(who, query, 10, {}), bm25(terms, ["red", "fox", "dog"]))
    async with store.pool.connection() as conn:
        row = await (await conn.execute(
            "SELECT sum(docs), sum(length) FROM bm25_stats WHERE tenant = %s", (who,))).fetchone()
    assert row is not None and (row[0], row[1]) == (3, sum(sum(c.values()) for c in terms.values()))


async def test_many_writes_keep_the_statistics_exact_and_few(store: PgVectorStore) -> None:
    who = tenant()
    terms: dict[str, dict[str, int]] = {}
    for number in range(COMPACT_EVERY + 6):  # one statement each, as the indexer writes
        words = ["fox"] * (number % 3 + 1) + ["sun"] * (number % 5)
        await write(store, who, {f"i{number}": ("", " ".join(words))})
        terms[f"i{number}"] = {"fox": number % 3 + 1, **({"sun": number % 5} if number % 5 else {})}
    async with store.pool.connection() as conn:
        row = await (await conn.execute(
            "SELECT count(*), sum(docs), sum(length) FROM bm25_stats WHERE tenant = %s", (who,))).fetchone()
    assert row is not None
    assert (row[1], row[2]) == (len(terms), sum(sum(c.values()) for c in terms.values()))
    assert row[0] < COMPACT_EVERY  # folded on the way
    assert_ranking(await store.text_search(who, "sun fox", 100, {}), bm25(terms, ["sun", "fox"]))


async def test_a_database_from_before_bm25_is_filled_from_its_items(store: PgVectorStore) -> None:
    who = tenant()
    await write(store, who, DOCS)
    before = await store.text_search(who, "red fox dog", 10, {})
    async with store.pool.connection() as conn:
        await conn.execute("DROP TABLE bm25_postings, bm25_stats CASCADE")
        for name in ("inserted", "updated", "deleted"):
            await conn.execute(f"DROP TRIGGER bm25_items_{name} ON items")
    await store.ensure_schema()
    assert_ranking(await store.text_search(who, "red fox dog", 10, {}), before)
    assert_ranking(before, bm25(TERMS, ["red", "fox", "dog"]))


async def test_hybrid_search_fuses_bm25_with_the_vector_ranking(
    indexer_service: Component, publisher: Publisher, store: PgVectorStore, embedder: TritonEmbedder
) -> None:
    who = tenant()
    await publisher.publish_many("content-upserted", [
        {"id": item_id, "title": title, "text": text, "version": 1, "tenant": who}
        for item_id, (title, text) in DOCS.items()])

    async def indexed() -> bool:
        return await store.count_items(who) == len(DOCS)
    await wait_for(indexed, what="the tiny corpus indexed")

    query = "the red fox and a dog"
    lexical = bm25(TERMS, ["red", "fox", "dog"])
    assert_ranking(await store.text_search(who, query, FUSION_DEPTH, {}), lexical)
    version = await store.active_version(who)
    assert version is not None
    vector = (await embedder.embed([query], version, lane="query")).vectors[0]
    semantic = await store.vector_search(version, who, vector, FUSION_DEPTH, {})
    # Fused from the hand-computed BM25 scores: the order exactly, the scores to float precision.
    expected = convex_fusion(semantic, lexical)
    assert expected[0][1] > expected[-1][1]
    for k in (2, 10):
        result = await search(SearchQuery(query, k, who, mode="hybrid"), store.for_tenant(who), embedder)
        assert [hit.id for hit in result.hits] == [item_id for item_id, _ in expected[:k]]
        assert [hit.score for hit in result.hits] == pytest.approx([score for _, score in expected[:k]])
