"""How hybrid search should fuse BM25 with the vector ranking, measured in process on a BEIR
folder: reciprocal rank fusion against a convex combination of min-max normalised scores
(core.fusion.convex_fusion) over a grid of weights, on the train and test judgements.

`python -m bench.fusion_quality ../shared/data/scifact-dev [--model DIR] [--vectors FILE.npy]`
(a running stack's PostgreSQL analyses the texts: `flywheel up postgres`). BM25 is the platform's formula
(core.adapters.pgvector.bm25) over the lexemes PostgreSQL's `english` configuration makes of
each title and text, as items.tsv does; the vector ranking is exact search over the platform's
chunks (bench.chunk_quality), scored by each item's best chunk; each ranking is cut to the
depth hybrid search fuses (core.fusion.FUSION_DEPTH). `session_labels` scores the weights as a
training run does on held-out sessions (clicks on the vector top 10 as the only labels), with
and without the unshown items. Prints one JSON object; the corpus is embedded once (about 15
minutes on a 2-core CPU; `--vectors FILE.npy` keeps the vectors for the next run).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from scipy.sparse import csr_matrix

from bench.beir import BeirDataset, Qrels, judged_metrics, read_dataset
from bench.chunk_quality import cached_vectors, chunk_corpus, cpu_encoder, fold_to_documents
from core.adapters.pgvector.bm25 import K1, B
from core.base_model import base_model_dir
from core.bootstrap import build_chunker
from core.config import get_settings
from core.fusion import FUSION_DEPTH, WEIGHT_GRID, Ranking, convex_fusion, fuse_parts, score_parts
from core.training.evaluation import condensed
from core.training.metrics import ndcg_at_k

WEIGHTS = tuple(round(w / 10, 1) for w in range(1, 10))
RRF_K = 60
# (query position) -> the ranking of (document id, score), best first
Ranker = Callable[[int], list[tuple[str, float]]]


def lexemes(dsn: str, data: BeirDataset, qids: Sequence[str]) -> tuple[list[dict[str, int]], list[list[str]]]:
    """Each document's lexemes with their counts (title and text, as items.tsv weighs them) and
    each query's distinct lexemes, as PostgreSQL's `english` configuration analyses them."""
    with psycopg.connect(dsn) as conn:
        docs: list[dict[str, int]] = [dict(conn.execute(
            "SELECT lexeme, coalesce(cardinality(positions), 1) FROM unnest("
            "setweight(to_tsvector('english', %s), 'A') || setweight(to_tsvector('english', %s), 'B'))",
            (d.title or "", d.text or "")).fetchall()) for d in data.docs]
        queries = [[row[0] for row in conn.execute(
            "SELECT DISTINCT lexeme FROM unnest(to_tsvector('english', %s))", (data.queries[q],)).fetchall()]
            for q in qids]
    return docs, queries


def bm25_scores(docs: list[dict[str, int]], queries: list[list[str]]) -> np.ndarray:
    """queries x documents: Okapi BM25 with Lucene's idf, as the platform computes it in SQL."""
    vocabulary: dict[str, int] = {}
    rows, cols, counts = [], [], []
    for j, terms in enumerate(docs):
        for term, count in terms.items():
            rows.append(vocabulary.setdefault(term, len(vocabulary)))
            cols.append(j)
            counts.append(count)
    tf = csr_matrix((counts, (rows, cols)), shape=(len(vocabulary), len(docs)))
    length = np.array([sum(terms.values()) for terms in docs], dtype=float)
    n, mean_length = len(docs), float(length.mean())
    df = np.diff(tf.indptr)
    scores = np.zeros((len(queries), n))
    for qi, query_terms in enumerate(queries):
        for term in query_terms:
            t = vocabulary.get(term)
            if t is None:
                continue
            idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
            postings = slice(tf.indptr[t], tf.indptr[t + 1])
            js, f = tf.indices[postings], tf.data[postings].astype(float)
            scores[qi, js] += idf * f * (K1 + 1) / (f + K1 * (1 - B + B * length[js] / mean_length))
    return scores


def top(row: np.ndarray, doc_ids: Sequence[str], depth: int = FUSION_DEPTH) -> list[tuple[str, float]]:
    candidates = np.argpartition(-row, depth)[:depth]
    return [(doc_ids[j], float(row[j])) for j in candidates[np.argsort(-row[candidates], kind="stable")]]


def rrf(vector: list[tuple[str, float]], keyword: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """The baseline: reciprocal rank fusion, 1 / (60 + rank) summed over the two rankings."""
    scores: dict[str, float] = {}
    for ranking in (vector, keyword):
        for rank, (item_id, _) in enumerate(ranking, start=1):
            scores[item_id] = scores.get(item_id, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))


def ndcg(ranker: Ranker, positions: Sequence[int], qids: Sequence[str], qrels: Qrels) -> float:
    rankings = {q: [item_id for item_id, _ in ranker(i)[:10]] for i, q in zip(positions, qids, strict=True)}
    return round(judged_metrics(rankings, qrels)["ndcg@10"], 4)


def session_labels(by_vector: Sequence[Ranking], by_keyword: Sequence[Ranking], qrels: Qrels,
                   shown_k: int = 10) -> dict[str, Any]:
    """The fusion weight as a training run scores it on held-out sessions: each query's session
    showed the vector ranking's top `shown_k` and clicked the relevant items among them. nDCG@10
    at each weight of WEIGHT_GRID with the clicks as the only relevant items, counting every
    item not shown as irrelevant (`clicks`) or dropping it (`clicks_condensed`, the trainer's
    condensed list), over the queries with a click."""
    clicks: dict[float, float] = dict.fromkeys(WEIGHT_GRID, 0.0)
    kept: dict[float, float] = dict.fromkeys(WEIGHT_GRID, 0.0)
    clicked_queries = 0
    for vector, keyword, judged in zip(by_vector, by_keyword, qrels.values(), strict=True):
        shown = frozenset(item for item, _ in vector[:shown_k])
        relevant = shown & judged.keys()
        if not relevant:
            continue
        clicked_queries += 1
        parts = score_parts(vector, keyword)
        for weight in WEIGHT_GRID:
            fused = fuse_parts(parts, weight)
            clicks[weight] += ndcg_at_k(condensed(fused, None), relevant, 10)
            kept[weight] += ndcg_at_k(condensed(fused, shown), relevant, 10)
    n = max(clicked_queries, 1)
    return {"queries_with_clicks": clicked_queries,
            "clicks": {w: round(v / n, 4) for w, v in clicks.items()},
            "clicks_condensed": {w: round(v / n, 4) for w, v in kept.items()}}


def run(dataset: Path, model: Path | None, vectors: Path | None = None) -> dict[str, Any]:
    settings = get_settings()
    data = read_dataset(dataset)
    doc_ids = [d.id for d in data.docs]
    splits = {"train": data.train, "test": data.test}
    qids = [q for qrels in splits.values() for q in qrels]
    docs, queries = lexemes(settings.postgres_dsn, data, qids)
    keyword = bm25_scores(docs, queries)

    chunks, owner = chunk_corpus(build_chunker(settings), data.docs)
    _, encode = cpu_encoder(model or base_model_dir(settings))
    similarities = encode([data.queries[q] for q in qids]) @ cached_vectors(encode, chunks, vectors).T
    vector = fold_to_documents(similarities, owner, len(doc_ids))
    by_vector = [top(row, doc_ids) for row in vector]
    by_keyword = [top(row, doc_ids) for row in keyword]
    def convex(weight: float) -> Ranker:
        return lambda i: convex_fusion(by_vector[i], by_keyword[i], weight)

    rankers: dict[str, Ranker] = {
        "vector": lambda i: by_vector[i], "bm25": lambda i: by_keyword[i],
        "rrf": lambda i: rrf(by_vector[i], by_keyword[i]),
        **{f"convex_{w}": convex(w) for w in WEIGHTS},
    }
    start = 0
    figures: dict[str, dict[str, float]] = {name: {} for name in rankers}
    for split, qrels in splits.items():
        positions = range(start, start + len(qrels))
        start += len(qrels)
        for name, ranker in rankers.items():
            figures[name][split] = ndcg(ranker, positions, list(qrels), qrels)
    chosen = max(WEIGHTS, key=lambda w: figures[f"convex_{w}"]["train"])
    labels, start = {}, 0
    for split, qrels in splits.items():
        end = start + len(qrels)
        labels[split] = session_labels(by_vector[start:end], by_keyword[start:end], qrels)
        start = end
    return {
        "dataset": data.name, "model": str(model or "base"), "depth": FUSION_DEPTH,
        "queries": {split: len(qrels) for split, qrels in splits.items()},
        "ndcg_at_10": figures, "weight_chosen_on_train": chosen,
        "test_at_chosen_weight": figures[f"convex_{chosen}"]["test"],
        "session_labels": labels,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("dataset", type=Path, help="a BEIR folder with qrels/train.tsv and qrels/test.tsv")
    parser.add_argument("--model", type=Path, default=None,
                        help="a sentence-transformers folder (default: the base model)")
    parser.add_argument("--vectors", type=Path, default=None, metavar="FILE.npy",
                        help="reuse the model's chunk vectors from FILE (written on the first run)")
    args = parser.parse_args()
    print(json.dumps(run(args.dataset, args.model, args.vectors), indent=2))


if __name__ == "__main__":
    main()
