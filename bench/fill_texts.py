"""The documents `flywheel bench fill` imports: short synthetic ones (a title and one sentence
of one topic, so each is one short chunk: cheap to embed), the same for the same seed on any machine, or
the documents of a corpus repeated under new ids until there are N. Plain functions, no I/O
beyond reading the corpus."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from bench.corpus import SYNTHETIC_SEED, Doc, load_corpus, synthetic_corpus

FILL_PREFIX = "fill-"


def fill_docs(n: int, seed: int = SYNTHETIC_SEED, start: int = 0) -> list[Doc]:
    """n short documents with ids `fill-<number>` from `start`; document i depends only on
    (seed, i), so a larger fill extends a smaller one."""
    if n < 0 or start < 0:
        raise ValueError("n and start must not be negative")
    return synthetic_corpus(n, seed, start, prefix=FILL_PREFIX, salt="fill:", sentences=None)


def repeated_corpus(corpus: Sequence[Doc], n: int) -> list[Doc]:
    """n documents: the corpus's, then its texts again under ids `<id>~<round>`."""
    if not corpus:
        raise ValueError("the corpus holds no documents")
    docs = []
    for number in range(n):
        doc = corpus[number % len(corpus)]
        rounds = number // len(corpus)
        docs.append(doc if rounds == 0 else Doc(f"{doc.id}~{rounds}", doc.title, doc.text, doc.metadata))
    return docs


def documents(n: int, seed: int = SYNTHETIC_SEED, corpus: Path | None = None) -> list[Doc]:
    """The fill's documents: synthetic, or a corpus repeated to n."""
    if n < 1:
        raise ValueError("--n must be at least 1")
    return fill_docs(n, seed) if corpus is None else repeated_corpus(load_corpus(corpus, n), n)


def slices(count: int, size: int) -> Iterator[tuple[int, int]]:
    """[start, end) ranges covering 0..count in steps of size."""
    if size < 1:
        raise ValueError("slice size must be at least 1")
    for start in range(0, count, size):
        yield start, min(count, start + size)
