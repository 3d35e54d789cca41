"""Token-aware chunking that keeps each chunk's context.

Every chunk is `header + "\\n" + window`: the header (by default the item's title; a template,
see ChunkingConfig.header) leads every chunk, not only the first, and the window is a slice of
the item's text, cut by the model's own tokenizer at character offsets. A chunk's tokens
(header, window and the model's special tokens such as [CLS] and [SEP]) never exceed the
model's maximum sequence length, so the model truncates nothing. An item whose header and text
fit in one sequence stays one chunk; longer texts become windows that overlap by
`overlap_tokens`.
"""

from __future__ import annotations

import string
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

DEFAULT_HEADER = "{title}"


def header_fields(template: str) -> list[str]:
    """The fields a header template names; raises ValueError for anything but plain names."""
    fields = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise ValueError(f"chunk header fields are plain names such as {{title}} or a metadata key, "
                             f"not {{{name}}}")
        fields.append(name)
    return fields


@dataclass(frozen=True)
class ChunkingConfig:
    """`max_tokens`: the model's maximum sequence length (special tokens included), what one
    chunk may hold in all. `header`: a template over `title` and the item's metadata keys
    (missing ones are empty), e.g. "{title}" or "{source}: {title}"; "" for no header."""

    max_tokens: int = 256
    overlap_tokens: int = 32
    header: str = DEFAULT_HEADER

    def __post_init__(self) -> None:
        if self.max_tokens < 8:
            raise ValueError("max_tokens must be at least 8")
        if not 0 <= self.overlap_tokens < self.max_tokens:
            raise ValueError("overlap_tokens must be >= 0 and smaller than max_tokens")
        header_fields(self.header)


class _Fields(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


class Chunker:
    def __init__(self, tokenizer: Any, config: ChunkingConfig | None = None) -> None:
        self.tokenizer = tokenizer
        self.config = config or ChunkingConfig()
        count = getattr(tokenizer, "num_special_tokens_to_add", None)
        self.special_tokens = int(count(pair=False)) if callable(count) else 0

    def _offsets(self, text: str) -> list[tuple[int, int]]:
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(encoded["offset_mapping"])

    def header(self, title: str, metadata: Mapping[str, Any] | None = None) -> str:
        """The item's header, cut to at most half a sequence so windows keep room for text."""
        fields = _Fields({str(k): str(v) for k, v in (metadata or {}).items() if v is not None})
        fields["title"] = title or ""
        header = " ".join(self.config.header.format_map(fields).split())
        if not header:
            return ""
        offsets = self._offsets(header)
        limit = (self.config.max_tokens - self.special_tokens) // 2
        return header if len(offsets) <= limit else header[: offsets[limit - 1][1]]

    def _count(self, text: str) -> int:
        return len(self._offsets(text))

    def windows(self, text: str, size: int, prefix: str = "") -> list[str]:
        """`text` in windows of at most `size` tokens (counted again on `prefix + window`, as
        the model will read it), overlapping by the configured tokens. Windows start at the
        start of a word, so no window begins with the tail of a word cut in two."""
        offsets = self._offsets(text)
        if len(offsets) <= size:
            return [text]
        overlap = min(self.config.overlap_tokens, size // 2)
        budget = self._count(prefix) + size if prefix else size
        chunks: list[str] = []
        start = 0
        while True:
            end = min(start + size, len(offsets))
            window = text[offsets[start][0] : offsets[end - 1][1]]
            # A word cut at the window's end may take more tokens alone than inside the text.
            while end - start > 1 and self._count(prefix + window) > budget:
                end -= 1
                window = text[offsets[start][0] : offsets[end - 1][1]]
            chunks.append(window)
            if end >= len(offsets):
                return chunks
            following = max(end - overlap, start + 1)
            while following > start + 1 and offsets[following][0] == offsets[following - 1][1]:
                following -= 1  # back to the start of the word
            start = following

    def split(self, text: str) -> list[str]:
        """A text without a header, in windows of the whole sequence."""
        if not text.strip():
            return [text]
        return self.windows(text, self.config.max_tokens - self.special_tokens)

    def split_item(self, title: str, text: str, metadata: Mapping[str, Any] | None = None) -> list[str]:
        """The item's chunks: each is its header, a newline and a window of its text."""
        header = self.header(title, metadata)
        if not header:
            return self.split(text)
        if not text.strip():
            return [header]
        size = self.config.max_tokens - self.special_tokens - len(self._offsets(header))
        return [f"{header}\n{window}" for window in self.windows(text, size, prefix=f"{header}\n")]


_TOKENIZER_LOCK = threading.Lock()


def tokenizer_for(model_dir: Path) -> Any:
    """The model's tokenizer, loaded once. Worker threads ask for it at the same time (the
    gateway's snippets and token counts), and transformers' lazy first import is not safe to
    race: two threads importing at once got "cannot import name 'AutoTokenizer'"."""
    with _TOKENIZER_LOCK:
        return _load_tokenizer(model_dir)


@lru_cache(maxsize=4)
def _load_tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True, use_fast=True)
