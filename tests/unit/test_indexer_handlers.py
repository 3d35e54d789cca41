"""The indexing handler over in-memory ports: idempotency, versions, deletes, imports."""

from __future__ import annotations

from typing import Any

import numpy as np

from core.chunking import Chunker, ChunkingConfig
from core.indexing import Delete, Upsert, coalesce, index_batch
from schemas.content import ContentUpserted
from tests.unit.fakes import FakeEmbedder, FakeStore


class WordTokenizer:
    """Whitespace 'tokens' with character offsets, enough to exercise the chunker."""

    def __call__(self, text: str, **_: Any) -> dict[str, list[tuple[int, int]]]:
        offsets, position = [], 0
        for word in text.split():
            start = text.index(word, position)
            offsets.append((start, start + len(word)))
            position = start + len(word)
        return {"offset_mapping": offsets}


CHUNKER = Chunker(WordTokenizer(), ChunkingConfig(max_tokens=8, overlap_tokens=2))


def upsert(
    id: str, version: int = 1, text: str = "some text", tenant: str = "default", **extra: Any
) -> Upsert:
    return Upsert(ContentUpserted(id=id, text=text, version=version, tenant=tenant, **extra))


async def run(ops: list[Any], store: FakeStore, embedder: FakeEmbedder | None = None) -> Any:
    return await index_batch(ops, store, embedder or FakeEmbedder(), CHUNKER)


async def test_redelivered_batch_changes_nothing_and_embeds_nothing() -> None:
    store, embedder = FakeStore(), FakeEmbedder()
    batch = [upsert("a"), upsert("b", text="other")]
    await run(batch, store, embedder)
    before = {k: v.vectors.copy() for k, v in store.chunks["1"].items()}
    calls = len(embedder.calls)
    await run(batch, store, embedder)
    assert len(embedder.calls) == calls
    assert {k: v.vectors.tolist() for k, v in store.chunks["1"].items()} == {
        k: v.tolist() for k, v in before.items()}


async def test_lower_or_equal_version_is_ignored_higher_replaces() -> None:
    store = FakeStore()
    await run([upsert("a", version=2, text="two")], store)
    await run([upsert("a", version=1, text="one"), upsert("a", version=2, text="again")], store)
    assert store.items[("default", "a")].text == "two"
    await run([upsert("a", version=3, text="three")], store)
    assert store.items[("default", "a")].text == "three"


async def test_highest_version_in_a_batch_wins_whatever_the_order() -> None:
    store = FakeStore()
    await run([upsert("a", version=5, text="five"), upsert("a", version=4, text="four")], store)
    assert store.items[("default", "a")].text == "five"


async def test_tombstone_deletes_item_and_chunks_in_every_version() -> None:
    store = FakeStore(versions=("1", "2"))
    await run([upsert("a"), upsert("b")], store)
    await run([Delete("default", "a")], store)
    assert ("default", "a") not in store.items
    assert all(("default", "a") not in table for table in store.chunks.values())
    assert ("default", "b") in store.items


async def test_delete_then_recreate_in_one_batch_applies_in_order() -> None:
    store = FakeStore()
    await run([upsert("a", version=5)], store)
    await run([Delete("default", "a"), upsert("a", version=1, text="new life")], store)
    assert store.items[("default", "a")].text == "new life"


def test_coalesce_rounds() -> None:
    rounds = coalesce([upsert("a", 1), upsert("a", 2), Delete("default", "a"), upsert("b")])
    assert [[type(op).__name__ for op in r] for r in rounds] == [["Upsert"], ["Delete", "Upsert"]]


async def test_long_text_is_chunked_and_all_chunks_embedded_in_few_calls() -> None:
    store, embedder = FakeStore(), FakeEmbedder(max_batch_size=64)
    long_text = " ".join(f"w{i}" for i in range(30))
    await run([upsert("long", text=long_text), upsert("short")], store, embedder)
    chunks = store.chunks["1"][("default", "long")]
    assert len(chunks.texts) > 1 and chunks.vectors.shape == (len(chunks.texts), 8)
    assert len(embedder.calls) == 1  # the whole batch in one embed call


async def test_writes_go_to_every_writable_version() -> None:
    store = FakeStore(versions=("1", "2"))
    await run([upsert("a")], store)
    assert ("default", "a") in store.chunks["1"] and ("default", "a") in store.chunks["2"]
    key = ("default", "a")
    assert not np.allclose(store.chunks["1"][key].vectors, store.chunks["2"][key].vectors)


async def test_backfill_of_a_new_version_embeds_items_already_stored() -> None:
    store = FakeStore(versions=("1",))
    await run([upsert("a")], store)
    store.versions.append("2")
    store.chunks["2"] = {}
    await run([upsert("a")], store)  # the replay through the same code path
    assert ("default", "a") in store.chunks["2"]


async def test_precomputed_vector_for_the_version_is_stored_without_embedding() -> None:
    store, embedder = FakeStore(), FakeEmbedder()
    vector = [3.0, 4.0, 0, 0, 0, 0, 0, 0]
    await run([upsert("a", vector=vector, model_version="1")], store, embedder)
    assert embedder.calls == []
    assert np.allclose(store.chunks["1"][("default", "a")].vectors[0][:2], [0.6, 0.8])


async def test_vector_of_the_wrong_dimension_is_rejected_not_stored() -> None:
    store = FakeStore()
    report = await run([upsert("a", vector=[1.0, 2.0], model_version="1"), upsert("b")], store)
    assert [(u.event.id, "dimensions" in reason) for u, reason in report.rejected] == [("a", True)]
    assert ("default", "a") not in store.items and ("default", "b") in store.items


async def test_same_id_in_two_tenants_is_two_items() -> None:
    store = FakeStore()
    await run([upsert("a", tenant="t1", text="one"), upsert("a", tenant="t2", text="two")], store)
    assert store.items[("t1", "a")].text == "one" and store.items[("t2", "a")].text == "two"
