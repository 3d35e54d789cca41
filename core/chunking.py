"""Token-aware chunking: long texts are cut into overlapping windows of the model's tokens,
sliced from the original text by character offsets, so no chunk is truncated by the model."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ChunkingConfig:
    max_tokens: int = 200
    overlap_tokens: int = 32

    def __post_init__(self) -> None:
        if self.max_tokens < 8:
            raise ValueError("max_tokens must be at least 8")
        if not 0 <= self.overlap_tokens < self.max_tokens:
            raise ValueError("overlap_tokens must be >= 0 and smaller than max_tokens")


class Chunker:
    def __init__(self, tokenizer: Any, config: ChunkingConfig | None = None) -> None:
        self.tokenizer = tokenizer
        self.config = config or ChunkingConfig()

    def split(self, text: str) -> list[str]:
        if not text.strip():
            return [text]
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets: list[tuple[int, int]] = encoded["offset_mapping"]
        size, step = self.config.max_tokens, self.config.max_tokens - self.config.overlap_tokens
        if len(offsets) <= size:
            return [text]
        chunks = []
        for start in range(0, len(offsets), step):
            window = offsets[start : start + size]
            chunks.append(text[window[0][0] : window[-1][1]])
            if start + size >= len(offsets):
                break
        return chunks

    def split_item(self, title: str, text: str) -> list[str]:
        """The title leads the first chunk, where it helps retrieval most."""
        body = f"{title}\n{text}" if title else text
        return self.split(body)


@lru_cache(maxsize=4)
def tokenizer_for(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True, use_fast=True)
