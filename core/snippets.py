"""What a search result shows of its item: the text of the chunk that matched the query best,
trimmed to a snippet (the parts of a hybrid score are core.fusion's).

Chunks keep only their vectors in the store, not their text; a chunk's text is cut again from
the item's text by the same chunker the indexer used (core.chunking). The first chunk starts
at the start of the text, so most items (one chunk) need no tokenizer at all.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from core.chunking import Chunker

# The longest snippet, in characters (cut at a word, with an ellipsis).
SNIPPET_CHARS = 300


@dataclass(frozen=True)
class ItemView:
    """An item as a search result shows it: title, metadata, and the text of its best chunk's
    number (`text` may be only the start of the item's text when `chunk_no` is 0)."""

    title: str
    metadata: dict[str, Any]
    chunk_no: int
    text: str
    version: int = 0  # the item's version: a later chunk's text is cached under it


@runtime_checkable
class BestChunks(Protocol):
    async def describe_best(
        self, version: str, tenant: str, query: np.ndarray, ids: Sequence[str], chars: int
    ) -> dict[str, ItemView]:
        """Title, metadata and the number of the chunk closest to `query` of each item (0 when
        the version holds no chunk of it), with the item's text (its first `chars` characters
        when that chunk is the first)."""
        ...


def trim(text: str, chars: int = SNIPPET_CHARS, query: str = "") -> str:
    """Whitespace collapsed; at most `chars` characters, cut at words, with ellipses: of a
    longer text, the run of words that holds most of the query's words (by their first five
    letters, so "kneading" finds "knead"), the earliest of equals."""
    words = text.split()
    flat = " ".join(words)
    if len(flat) <= chars:
        return flat
    terms = {_stem(w) for w in query.split() if len(_stem(w)) > 2}
    hits = [int(any(_stem(w).startswith(t) for t in terms)) for w in words]
    budget = chars - 2  # room for the ellipses
    best, span = -1, (0, 1)
    end, width, count = 0, 0, 0  # words[start:end]: `width` characters with a space after each
    for start in range(len(words)):
        if end <= start:
            end, width, count = start, 0, 0
        while end < len(words) and width + len(words[end]) <= budget:
            width, count, end = width + len(words[end]) + 1, count + hits[end], end + 1
        if count > best:
            best, span = count, (start, max(end, start + 1))
        if not terms:
            break
        if end > start:
            width, count = width - len(words[start]) - 1, count - hits[start]
    cut = " ".join(words[span[0]:span[1]])[:budget]
    return ("…" if span[0] else "") + cut + ("…" if span[1] < len(words) else "")


def _stem(word: str) -> str:
    return "".join(c for c in word.lower() if c.isalnum())[:5]


def chunk_text(chunker: Chunker, view: ItemView) -> str:
    """The window of the item's text that chunk `view.chunk_no` holds, without its header (the
    title, shown apart); the first window when the item has fewer chunks now."""
    if view.chunk_no == 0:
        return view.text
    chunks = chunker.split_item(view.title, view.text, view.metadata)
    chunk = chunks[view.chunk_no] if view.chunk_no < len(chunks) else chunks[0]
    header = chunker.header(view.title, view.metadata)
    return chunk[len(header) + 1:] if header and chunk.startswith(f"{header}\n") else chunk


class Snippets:
    """Snippets of search results. A later chunk's text needs the item's text tokenized again
    (milliseconds per item), so the texts of later chunks are kept, per tenant, item, item
    version and chunk, for the CACHED most recent; the chunker is built on first need."""

    CACHED = 4096

    def __init__(self, chunker: Callable[[], Chunker], chars: int = SNIPPET_CHARS) -> None:
        self._make_chunker = chunker
        self._chunker: Chunker | None = None
        self._building = threading.Lock()
        self._chunks: OrderedDict[tuple[str, str, int, int], str] = OrderedDict()
        self.chars = chars

    async def of(self, views: dict[str, ItemView], query: str = "", tenant: str = "") -> dict[str, str]:
        """Each item's snippet: of its best chunk, the words that hold most of the query's."""
        texts = {item_id: self._known(tenant, item_id, view) for item_id, view in views.items()}
        missing = {item_id: views[item_id] for item_id, text in texts.items() if text is None}
        if missing:
            cut = await asyncio.to_thread(self._cut, missing)
            for item_id, text in cut.items():
                texts[item_id] = text
                self._keep((tenant, item_id, missing[item_id].version, missing[item_id].chunk_no), text)
        return {item_id: trim(text or "", self.chars, query) for item_id, text in texts.items()}

    def _known(self, tenant: str, item_id: str, view: ItemView) -> str | None:
        if view.chunk_no == 0:
            return view.text
        key = (tenant, item_id, view.version, view.chunk_no)
        found = self._chunks.get(key)
        if found is not None:
            self._chunks.move_to_end(key)
        return found

    def _keep(self, key: tuple[str, str, int, int], text: str) -> None:
        self._chunks[key] = text
        while len(self._chunks) > self.CACHED:
            self._chunks.popitem(last=False)

    def _cut(self, views: dict[str, ItemView]) -> dict[str, str]:
        with self._building:  # searches in several worker threads may need it first at once
            if self._chunker is None:
                self._chunker = self._make_chunker()
        return {item_id: chunk_text(self._chunker, view) for item_id, view in views.items()}
