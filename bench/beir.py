"""A BEIR dataset for a quality benchmark: corpus, queries and train/test judgements (qrels),
optionally cut down to a smaller corpus that still holds every judged document. Plain data
and plain functions, no I/O beyond reading the files."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.corpus import Doc, load_corpus

# query id -> {document id: relevance grade > 0}
Qrels = dict[str, dict[str, int]]


@dataclass(frozen=True)
class BeirDataset:
    name: str
    docs: list[Doc]
    queries: dict[str, str]
    train: Qrels
    test: Qrels

    def summary(self) -> dict[str, int]:
        return {"documents": len(self.docs), "train_queries": len(self.train),
                "test_queries": len(self.test),
                "train_judgements": sum(len(j) for j in self.train.values()),
                "test_judgements": sum(len(j) for j in self.test.values())}


def read_qrels(path: Path) -> Qrels:
    """`query-id <tab> corpus-id <tab> score` with a header row; grades of 0 are not relevant."""
    qrels: Qrels = {}
    with path.open(encoding="utf-8", newline="") as handle:
        for line_no, row in enumerate(csv.reader(handle, delimiter="\t"), start=1):
            if not row or (line_no == 1 and row[0] == "query-id"):
                continue
            if len(row) < 3:
                raise ValueError(f"{path}:{line_no}: expected query-id, corpus-id and score")
            try:
                grade = int(float(row[2]))
            except ValueError as error:
                raise ValueError(f"{path}:{line_no}: score {row[2]!r} is not a number") from error
            if grade > 0:
                qrels.setdefault(row[0], {})[row[1]] = grade
    return qrels


def read_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                queries[str(record["_id"])] = str(record["text"])
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise ValueError(f"{path}:{line_no}: expected a JSON object with _id and text") from error
    return queries


def _stable_order(qrels: Qrels) -> list[str]:
    """The query ids in a stable order: numeric ids by number, then the others by name."""
    return sorted(qrels, key=lambda q: (0, int(q), q) if q.isdigit() else (1, 0, q))


def _first(qrels: Qrels, limit: int | None) -> Qrels:
    """The first `limit` queries in the stable order."""
    return {q: qrels[q] for q in _stable_order(qrels)[:limit]}


def read_dataset(
    path: Path, max_docs: int | None = None, max_train: int | None = None, max_test: int | None = None
) -> BeirDataset:
    """Read a BEIR folder. With `max_docs`, the corpus keeps every document the kept queries
    judge, then the others in file order up to max_docs (a smaller corpus is an easier one:
    its figures are not comparable with the full corpus's)."""
    needed = [path / "corpus.jsonl", path / "queries.jsonl", path / "qrels" / "train.tsv",
              path / "qrels" / "test.tsv"]
    missing = [str(p.relative_to(path)) for p in needed if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{path} is not a BEIR folder with train and test qrels: "
                                f"missing {', '.join(missing)}")
    queries = read_queries(path / "queries.jsonl")
    docs = load_corpus(path / "corpus.jsonl", 10**9)
    doc_ids = {d.id for d in docs}

    def usable(qrels: Qrels) -> Qrels:
        kept = {q: {d: g for d, g in judged.items() if d in doc_ids} for q, judged in qrels.items()
                if q in queries}
        return {q: judged for q, judged in kept.items() if judged}

    train = _first(usable(read_qrels(path / "qrels" / "train.tsv")), max_train)
    test = _first(usable(read_qrels(path / "qrels" / "test.tsv")), max_test)
    if not train or not test:
        raise ValueError(f"{path}: no usable {'train' if not train else 'test'} queries "
                         "(a query needs a text and a judged document in the corpus)")
    if max_docs is not None:
        judged = {d for qrels in (train, test) for j in qrels.values() for d in j}
        if len(judged) > max_docs:
            raise ValueError(f"--max-docs {max_docs} is below the {len(judged)} documents the "
                             "kept queries judge; raise it or keep fewer queries")
        rest = max_docs - len(judged)
        kept_docs = []
        for doc in docs:
            if doc.id in judged:
                kept_docs.append(doc)
            elif rest > 0:
                kept_docs.append(doc)
                rest -= 1
        docs = kept_docs
    used = set(train) | set(test)
    return BeirDataset(path.resolve().name, docs, {q: t for q, t in queries.items() if q in used},
                       train, test)


def ndcg(ranked: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    """nDCG@k with graded relevance and linear gain, as BEIR's pytrec_eval computes it."""
    dcg = sum(judged.get(item, 0) / math.log2(i + 2) for i, item in enumerate(ranked[:k]))
    ideal_grades = sorted(judged.values(), reverse=True)[:k]
    ideal = sum(g / math.log2(i + 2) for i, g in enumerate(ideal_grades))
    return dcg / ideal if ideal else 0.0


def recall(ranked: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    return len(set(ranked[:k]) & judged.keys()) / len(judged) if judged else 0.0


def judged_metrics(rankings: Mapping[str, Sequence[str]], qrels: Qrels) -> dict[str, float]:
    """nDCG@10 and Recall@100 averaged over the judged queries (a query without a ranking
    counts as a miss)."""
    if not qrels:
        return {"ndcg@10": 0.0, "recall@100": 0.0}
    n = len(qrels)
    return {
        "ndcg@10": round(sum(ndcg(rankings.get(q, []), j, 10) for q, j in qrels.items()) / n, 5),
        "recall@100": round(sum(recall(rankings.get(q, []), j, 100) for q, j in qrels.items()) / n, 5),
    }


def paired_change(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """The mean per-query change from `before` to `after` (the same queries) and its standard
    error: a change within about two standard errors of 0 is not told apart from noise."""
    diffs = [after[q] - before[q] for q in before]
    if len(diffs) < 2:
        return {"change": round(sum(diffs), 4), "standard_error": float("nan")}
    mean = sum(diffs) / len(diffs)
    variance = sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)
    return {"change": round(mean, 4), "standard_error": round(math.sqrt(variance / len(diffs)), 4)}


def split_held_out(qrels: Qrels, fraction: float) -> tuple[Qrels, Qrels]:
    """(kept, held out): every query whose position in the stable order falls on the held-out
    share, spread through the set rather than taken from its end."""
    ids = _stable_order(qrels)
    every = max(2, round(1 / fraction)) if fraction > 0 else 0
    held = {q for i, q in enumerate(ids) if every and i % every == every - 1}
    return ({q: j for q, j in qrels.items() if q not in held}, {q: qrels[q] for q in ids if q in held})


def judgments_jsonl(qrels: Qrels, queries: Mapping[str, str]) -> str:
    """The judgments as `POST /v1/datasets` takes them (format `jsonl`)."""
    return "".join(json.dumps({"query": queries[q], "query_id": q, "item_id": item, "grade": grade}) + "\n"
                   for q, judged in qrels.items() for item, grade in judged.items())


def clicks_for(shown: Sequence[str], judged: Mapping[str, int]) -> list[tuple[str, int]]:
    """The (item, rank) a user would click among the shown results: the relevant ones."""
    return [(item, rank) for rank, item in enumerate(shown, start=1) if item in judged]
