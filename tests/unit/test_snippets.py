"""Search results that explain themselves: the snippet is the text of the chunk closest to the
query (cut again by the indexer's chunker, the shipped model's tokenizer), trimmed; hybrid
results carry the vector and keyword parts that their fused score sums."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np

from core.base_model import base_model_dir
from core.chunking import Chunker, ChunkingConfig, tokenizer_for
from core.config import Settings
from core.domain import ChunkVectors, Item, SearchQuery
from core.fusion import score_parts
from core.search import search
from core.snippets import ItemView, Snippets, chunk_text, trim
from tests.unit.fakes import FakeEmbedder, FakeStore

CHUNKER = Chunker(tokenizer_for(base_model_dir(Settings())), ChunkingConfig(max_tokens=32, overlap_tokens=4))
TITLE = "Whales of the northern seas"
TEXT = ("Blue whales are the largest animals that ever lived and feed on krill in cold water. " * 3
        + "Humpback whales sing long songs that carry across whole ocean basins at night. " * 3)


class SnippetStore(FakeStore):
    """The fake store, telling each item's chunk closest to the query (core.snippets.BestChunks)."""

    async def describe_best(self, version: str, tenant: str, query: np.ndarray, ids: Sequence[str],
                            chars: int) -> dict[str, ItemView]:
        views = {}
        for item_id in ids:
            item = self.items.get((tenant, item_id))
            if item is None:
                continue
            chunks = self.chunks[version].get((tenant, item_id))
            best = int(np.argmax(chunks.vectors @ query)) if chunks else 0
            text = item.text if best else item.text[:chars]
            views[item_id] = ItemView(item.title, item.metadata, best, text, item.version)
        return views


def test_trim_cuts_at_a_word_with_an_ellipsis() -> None:
    assert trim("  short \n text ") == "short text"
    long = trim("word " * 200, 50)
    assert len(long) <= 50 and long.endswith("…") and not long.endswith(" …")
    assert long[:-1].split() == ["word"] * len(long[:-1].split())
    # Of a longer text, the words that hold the query's (by their first five letters).
    text = "bread dough " * 60 + "the lighthouse keepers trimmed the lamp " + "bread dough " * 60
    shown = trim(text, 80, "lighthouse keeper lamp")
    assert shown.startswith("…") and shown.endswith("…") and len(shown) <= 80
    assert "lighthouse keepers trimmed the lamp" in shown
    assert trim(text, 80, "nothing matches").startswith("bread dough")


def test_a_later_chunk_is_cut_again_without_its_header() -> None:
    chunks = CHUNKER.split_item(TITLE, TEXT)
    assert len(chunks) > 2
    for number, chunk in enumerate(chunks):
        window = chunk_text(CHUNKER, ItemView(TITLE, {}, number, TEXT))
        assert chunk == f"{TITLE}\n{window}" if number else TEXT.startswith(window)
    # An item that has fewer chunks now than when it was indexed: its first window.
    assert chunk_text(CHUNKER, ItemView(TITLE, {}, 99, TEXT)) == chunks[0][len(TITLE) + 1:]


def test_score_parts_name_each_rankings_score_and_rank() -> None:
    parts = score_parts([("a", 0.9), ("b", 0.5)], [("b", 7.0), ("c", 2.0)])
    assert parts["a"] == {"vector": {"score": 0.9, "rank": 1, "normalised": 1.0}, "keyword": None}
    assert parts["b"] == {"vector": {"score": 0.5, "rank": 2, "normalised": 0.0},
                          "keyword": {"score": 7.0, "rank": 1, "normalised": 1.0}}
    assert parts["c"] == {"vector": None, "keyword": {"score": 2.0, "rank": 2, "normalised": 0.0}}


def _indexed(store: FakeStore, embedder: FakeEmbedder) -> None:
    async def index() -> None:
        upserts = []
        corpus = [("whales", TITLE, TEXT), ("cats", "Cats", "Cats sleep most of the day.")]
        for item_id, title, text in corpus:
            texts = CHUNKER.split_item(title, text)
            vectors = (await embedder.embed(texts, "1")).vectors
            item = Item("default", item_id, title, text, {"kind": "animal"}, 1)
            upserts.append(ChunkVectors(item, texts, vectors))
        await store.apply({"1": upserts}, [])
    asyncio.run(index())


def test_hits_carry_the_snippet_of_their_best_chunk_and_hybrid_parts() -> None:
    store, embedder = SnippetStore(), FakeEmbedder()
    _indexed(store, embedder)
    snippets = Snippets(lambda: CHUNKER)
    # The fake embedder's vector of a chunk's own text is that chunk's: searching for the text of
    # the last chunk finds it best.
    last = CHUNKER.split_item(TITLE, TEXT)[-1]
    result = asyncio.run(search(SearchQuery(last, 2, mode="hybrid"), store, embedder, snippets))
    whales = next(h for h in result.hits if h.id == "whales")
    assert whales.snippet == trim(last[len(TITLE) + 1:], query=last)
    assert whales.title == TITLE and whales.metadata == {"kind": "animal"}
    parts: dict[str, Any] = whales.score_parts or {}
    assert parts["vector"]["rank"] == 1 and parts["keyword"]["rank"] == 1
    assert whales.score == 1.0  # first in both rankings: the top of each normalised scale
    cats = next(h for h in result.hits if h.id == "cats")
    assert cats.snippet == "Cats sleep most of the day."

    plain = asyncio.run(search(SearchQuery(last, 2), store, embedder, snippets))
    assert all(h.score_parts is None and h.snippet for h in plain.hits)
    # Without snippets (the CLI, benchmarks): as before.
    bare = asyncio.run(search(SearchQuery(last, 2), store, embedder))
    assert [h.id for h in bare.hits] == [h.id for h in plain.hits]
    assert all(h.snippet is None for h in bare.hits)


class CountingChunker(Chunker):
    def __init__(self) -> None:
        super().__init__(CHUNKER.tokenizer, CHUNKER.config)
        self.splits = 0

    def split_item(self, title: str, text: str, metadata: Any = None) -> list[str]:
        self.splits += 1
        return super().split_item(title, text, metadata)


def test_a_later_chunks_text_is_cut_once_per_item_version_and_tenant() -> None:
    chunker = CountingChunker()
    snippets = Snippets(lambda: chunker)
    later = {"whales": ItemView(TITLE, {}, 2, TEXT, 1)}
    first = asyncio.run(snippets.of(later, "songs", "t1"))
    assert asyncio.run(snippets.of(later, "songs", "t1")) == first and chunker.splits == 1
    asyncio.run(snippets.of(later, "songs", "t2"))  # another tenant's item of the same id
    asyncio.run(snippets.of({"whales": ItemView(TITLE, {}, 2, TEXT, 2)}, "songs", "t1"))  # a new version
    assert chunker.splits == 3
    # The first chunk needs no chunker at all.
    asyncio.run(snippets.of({"cats": ItemView("Cats", {}, 0, "Cats sleep.", 1)}, "cats", "t1"))
    assert chunker.splits == 3


def test_searches_that_need_the_chunker_at_once_build_it_once() -> None:
    """Concurrent searches cut later chunks in worker threads; the chunker (the tokenizer's
    first load) is built by one of them, never raced (a race of transformers' lazy import made
    searches answer 500)."""
    import threading
    import time

    built: list[int] = []

    def make() -> Chunker:
        built.append(threading.get_ident())
        time.sleep(0.05)  # widen the window in which a second thread would build it too
        return CHUNKER

    snippets = Snippets(make)
    view = ItemView(TITLE, {}, 1, TEXT, version=1)

    async def many() -> list[dict[str, str]]:
        return await asyncio.gather(*(snippets.of({f"i{n}": view}, "whales", f"t{n}") for n in range(8)))

    answers = asyncio.run(many())
    assert len(built) == 1
    assert all(answer[f"i{n}"] for n, answer in enumerate(answers))


def test_hybrid_fuses_at_the_weight_its_version_chose() -> None:
    store, embedder = SnippetStore(), FakeEmbedder()
    _indexed(store, embedder)
    query = SearchQuery("whales sleep", 2, mode="hybrid")
    default = asyncio.run(search(query, store, embedder))
    assert default.fusion_weight == 0.5  # no weight recorded for version 1
    for weight in (0.0, 1.0):
        store.fusion_weights["1"] = weight
        result = asyncio.run(search(query, store, embedder))
        assert result.fusion_weight == weight
        part = "vector" if weight == 1.0 else "keyword"
        for hit in result.hits:  # the score is the chosen ranking's normalised part alone
            chosen = (hit.score_parts or {})[part]
            assert hit.score == (chosen["normalised"] if chosen else 0.0)
    assert asyncio.run(search(SearchQuery("whales sleep", 2), store, embedder)).fusion_weight is None
