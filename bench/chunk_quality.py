"""The platform's chunks against whole documents: nDCG@10 of the base model, in process, with
exact (brute-force) cosine search, on a BEIR folder's train and test judgements.

`python -m bench.chunk_quality ../shared/data/scifact-dev [--max-docs N --queries N]`: each document is
embedded twice, whole (`title + " " + text`, which the model truncates at its maximum sequence
length, as sentence-transformers evaluations do) and as the indexer chunks it
(core.bootstrap.build_chunker: the same settings, header and windows), an item then ranked by
its best chunk. No index enters, so the difference is the chunking's alone. Prints one JSON
object: per split, the queries and both figures, and the figure over all judged queries.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.beir import Qrels, ndcg, read_dataset
from bench.corpus import Doc
from core.base_model import base_model_dir
from core.bootstrap import build_chunker
from core.chunking import Chunker
from core.config import get_settings
from core.training.runtime import load_model

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

# Texts -> L2-normalised float32 vectors, one row per text.
Encode = Callable[[list[str]], np.ndarray]


def cpu_encoder(model_dir: Path, batch_size: int = 32) -> tuple[SentenceTransformer, Encode]:
    """The sentence-transformers model in `model_dir` on CPU, and its encoder (progress bars on
    stderr)."""
    model = load_model(model_dir, "cpu")

    def encode(texts: list[str]) -> np.ndarray:
        return np.asarray(model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                       convert_to_numpy=True, show_progress_bar=True), dtype=np.float32)
    return model, encode


def best_chunk_scores(query_vectors: np.ndarray, chunk_vectors: np.ndarray, owner: np.ndarray,
                      documents: int) -> np.ndarray:
    """queries x documents: each document's score is its best chunk's cosine."""
    return fold_to_documents(query_vectors @ chunk_vectors.T, owner, documents)


def fold_to_documents(chunk_scores: np.ndarray, owner: np.ndarray, documents: int) -> np.ndarray:
    """queries x chunks -> queries x documents, each document its best chunk's score."""
    scores = np.full((len(chunk_scores), documents), -np.inf, dtype=np.float32)
    np.maximum.at(scores.T, owner, chunk_scores.T)
    return scores


def cached_vectors(encode: Encode, chunks: list[str], cache: Path | None) -> np.ndarray:
    """The chunks' vectors, from `cache` (a .npy file) when it holds this corpus's with this
    model: the same number of rows, and its first rows equal to a fresh encoding; else encoded
    (and saved there). Runs over the same corpus and model then skip one pass over it."""
    if cache is not None and cache.exists():
        cached = np.load(cache)
        if cached.shape[0] == len(chunks) and np.allclose(cached[:16], encode(chunks[:16]), atol=1e-4):
            return cached
    vectors = encode(chunks)
    if cache is not None:
        np.save(cache, vectors)
    return vectors


def chunk_corpus(chunker: Chunker, docs: Sequence[Doc]) -> tuple[list[str], np.ndarray]:
    """Every document's chunks as the indexer cuts them, and the position of each one's document."""
    chunks: list[str] = []
    owner: list[int] = []
    for i, doc in enumerate(docs):
        for chunk in chunker.split_item(doc.title, doc.text, doc.metadata):
            chunks.append(chunk)
            owner.append(i)
    return chunks, np.array(owner)


def ndcg_by_query(scores: np.ndarray, doc_ids: list[str], qids: list[str], qrels: Qrels) -> dict[str, float]:
    """Each query's nDCG@10, ranking the documents by its row of scores."""
    return {q: ndcg([doc_ids[j] for j in np.argsort(-row)[:10]], qrels[q], 10)
            for row, q in zip(scores, qids, strict=True)}


def ndcg_at_10(scores: np.ndarray, doc_ids: list[str], qids: list[str], qrels: Qrels) -> float:
    """nDCG@10 averaged over the queries."""
    per_query = ndcg_by_query(scores, doc_ids, qids, qrels)
    return round(sum(per_query.values()) / len(per_query), 4) if per_query else 0.0


def run(dataset: Path, max_docs: int | None, max_queries: int | None, batch_size: int) -> dict[str, Any]:
    settings = get_settings()
    data = read_dataset(dataset, max_docs, max_queries, max_queries)
    model, encode = cpu_encoder(base_model_dir(settings), batch_size)
    chunker = build_chunker(settings)

    doc_ids = [d.id for d in data.docs]
    began = time.perf_counter()
    whole = encode([f"{d.title} {d.text}".strip() for d in data.docs])
    chunks, chunk_owner = chunk_corpus(chunker, data.docs)
    chunk_vectors = encode(chunks)
    report: dict[str, Any] = {
        "dataset": data.name, "documents": len(doc_ids), "chunks": len(chunks),
        "max_seq_length": model.max_seq_length, "chunk_header": settings.chunk_header, "splits": {},
    }
    weighted = {"whole": 0.0, "best_chunk": 0.0}
    for split, qrels in (("train", data.train), ("test", data.test)):
        qids = list(qrels)
        queries = encode([data.queries[q] for q in qids])
        figures = {
            "queries": len(qids),
            "whole": ndcg_at_10(queries @ whole.T, doc_ids, qids, qrels),
            "best_chunk": ndcg_at_10(best_chunk_scores(queries, chunk_vectors, chunk_owner, len(doc_ids)),
                                     doc_ids, qids, qrels),
        }
        report["splits"][split] = figures
        for name in weighted:
            weighted[name] += figures[name] * len(qids)
    judged = sum(f["queries"] for f in report["splits"].values())
    report["all_judged_queries"] = {"queries": judged,
                                    **{k: round(v / judged, 4) for k, v in weighted.items()}}
    report["seconds"] = round(time.perf_counter() - began, 1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("dataset", type=Path, help="a BEIR folder with qrels/train.tsv and qrels/test.tsv")
    parser.add_argument("--max-docs", type=int, default=None,
                        help="cut the corpus (every judged document kept; an easier corpus)")
    parser.add_argument("--queries", type=int, default=None, help="the first N queries of each split")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    print(json.dumps(run(args.dataset, args.max_docs, args.queries, args.batch_size), indent=2))


if __name__ == "__main__":
    main()
