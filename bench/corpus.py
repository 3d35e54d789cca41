"""The texts a benchmark runs on: a real corpus (BEIR directory, corpus.jsonl, JSON Lines or
CSV, read by producers.loaders) or a deterministic synthetic one, so the benchmark runs
anywhere without data files and two runs measure the same texts."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from producers.bulk import SourceError
from producers.loaders import read_corpus

SYNTHETIC_SEED = 20240611

# A small fixed vocabulary per topic, so documents of one topic are semantically close and a
# query about a topic has a meaningful neighbourhood.
TOPICS: dict[str, dict[str, tuple[str, ...]]] = {
    "astronomy": {
        "nouns": ("telescope", "galaxy", "nebula", "comet", "orbit", "planet", "star", "quasar",
                  "eclipse", "asteroid", "supernova", "spectrum"),
        "verbs": ("observes", "orbits", "emits", "collapses", "reflects", "measures", "tracks"),
        "adjs": ("distant", "bright", "faint", "massive", "icy", "red", "spiral"),
    },
    "cooking": {
        "nouns": ("dough", "oven", "sauce", "garlic", "butter", "recipe", "broth", "flour", "pan",
                  "yeast", "spice", "knife"),
        "verbs": ("bakes", "simmers", "roasts", "whisks", "seasons", "ferments", "chops"),
        "adjs": ("crispy", "savory", "sweet", "fresh", "smoky", "tender", "golden"),
    },
    "medicine": {
        "nouns": ("patient", "vaccine", "protein", "tumor", "antibody", "enzyme", "dose", "trial",
                  "receptor", "infection", "cell", "therapy"),
        "verbs": ("inhibits", "binds", "reduces", "triggers", "treats", "regulates", "expresses"),
        "adjs": ("chronic", "acute", "clinical", "immune", "genetic", "randomized", "viral"),
    },
    "computing": {
        "nouns": ("compiler", "database", "kernel", "thread", "cache", "network", "index", "query",
                  "processor", "memory", "protocol", "scheduler"),
        "verbs": ("compiles", "caches", "schedules", "indexes", "replicates", "parses", "streams"),
        "adjs": ("concurrent", "distributed", "fast", "idle", "virtual", "persistent", "binary"),
    },
    "finance": {
        "nouns": ("market", "bond", "dividend", "portfolio", "inflation", "loan", "bank", "equity",
                  "currency", "budget", "tax", "investor"),
        "verbs": ("invests", "hedges", "borrows", "trades", "values", "audits", "lends"),
        "adjs": ("volatile", "fiscal", "liquid", "annual", "risky", "stable", "global"),
    },
    "ecology": {
        "nouns": ("forest", "river", "species", "habitat", "wetland", "pollinator", "soil", "reef",
                  "predator", "seed", "drought", "glacier"),
        "verbs": ("migrates", "erodes", "pollinates", "adapts", "decays", "shelters", "grazes"),
        "adjs": ("native", "endangered", "coastal", "arid", "seasonal", "wild", "fragile"),
    },
}
CONNECTORS = ("while", "because", "and", "although", "so that", "whenever", "after")
DETERMINERS = ("the", "a", "every", "this", "one", "each")


@dataclass(frozen=True)
class Doc:
    id: str
    title: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def event(self, tenant: str, version: int = 1) -> dict[str, Any]:
        """The content-upserted event of this document."""
        return {
            "id": self.id, "title": self.title, "text": self.text,
            "metadata": self.metadata, "version": version, "tenant": tenant,
        }


def _sentence(rng: random.Random, words: dict[str, tuple[str, ...]]) -> str:
    def phrase() -> str:
        return f"{rng.choice(DETERMINERS)} {rng.choice(words['adjs'])} {rng.choice(words['nouns'])}"

    clause = f"{phrase()} {rng.choice(words['verbs'])} {phrase()}"
    if rng.random() < 0.5:
        clause += f" {rng.choice(CONNECTORS)} {phrase()} {rng.choice(words['verbs'])} {phrase()}"
    return clause[0].upper() + clause[1:] + "."


def synthetic_corpus(n: int, seed: int = SYNTHETIC_SEED, start: int = 0, *, prefix: str = "syn-",
                     salt: str = "", sentences: tuple[int, int] | None = (3, 9)) -> list[Doc]:
    """n documents (ids `<prefix><number>` from `start`), the same for the same seed on any machine.

    Each document is 3..9 sentences (roughly 40..160 words; one when `sentences` is None) about
    one topic, with a short title. Document i depends only on (salt, seed, i), so a longer corpus
    extends a shorter one.
    """
    topics = sorted(TOPICS)
    docs = []
    for number in range(start, start + n):
        rng = random.Random(f"{salt}{seed}:{number}")
        topic = topics[rng.randrange(len(topics))]
        words = TOPICS[topic]
        title = f"{rng.choice(words['adjs']).capitalize()} {rng.choice(words['nouns'])}"
        count = rng.randint(*sentences) if sentences else 1
        text = " ".join(_sentence(rng, words) for _ in range(count))
        docs.append(Doc(f"{prefix}{number:06d}", title, text, {"topic": topic}))
    return docs


def load_corpus(path: Path, n: int) -> list[Doc]:
    """Up to n documents of a corpus file or BEIR directory; unreadable rows are skipped."""
    docs: list[Doc] = []
    for item in read_corpus(path, tenant="bench"):
        if len(docs) >= n:
            break
        data = item.data
        if isinstance(data, SourceError) or not isinstance(data, dict):
            continue
        docs.append(Doc(data["id"], data["title"], data["text"], dict(data["metadata"])))
    if not docs:
        raise ValueError(f"no usable documents in {path}")
    return docs


def corpus_docs(path: Path | None, n: int) -> list[Doc]:
    return load_corpus(path, n) if path is not None else synthetic_corpus(n)


def load_queries(path: Path, n: int) -> list[str]:
    """Up to n query texts: BEIR queries.jsonl (`text`), JSON Lines with `query`/`text`, or one
    query per line. A directory means a BEIR dataset (its queries.jsonl)."""
    if path.is_dir():
        path = path / "queries.jsonl"
    queries: list[str] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            text: Any = line
            if line.startswith("{"):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    record = None
                if isinstance(record, dict):
                    text = record.get("text") or record.get("query")
            if isinstance(text, str) and text.strip():
                queries.append(text.strip())
            if len(queries) >= n:
                break
    if not queries:
        raise ValueError(f"no queries in {path}")
    return queries


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def derive_queries(texts: Sequence[str], n: int, seed: int = SYNTHETIC_SEED, words: int = 8) -> list[str]:
    """n short queries taken from the texts: a few words of a random sentence of a random text.
    Deterministic for the same texts and seed."""
    usable = [t for t in texts if t.split()]
    if not usable:
        raise ValueError("no texts to derive queries from")
    rng = random.Random(seed)
    queries = []
    for _ in range(n):
        sentences = [s for s in _SENTENCE_END.split(rng.choice(usable)) if s.split()]
        tokens = rng.choice(sentences).split()
        begin = rng.randrange(max(1, len(tokens) - words + 1))
        queries.append(" ".join(tokens[begin : begin + words]).strip(" .,;:"))
    return queries
