"""The trainer's recipe in process, without the stack: does a fine-tune on a BEIR folder's train
judgements lift its test queries, or only the train queries held out for the gate?

`python -m bench.finetune_split ../shared/data/scifact-dev [--epochs N --positives whole|chunk ...]`:
the train judgements are split as `flywheel bench quality --source judgments` splits them
(every seventh query held out); each trained pair gets `--mined-negatives` (1) negatives mined
as the platform mines them (core.training.mining.select_negatives over the base model's
best-chunk ranking), and `--shown-k K` keeps only the pairs a session showing K results would
have clicked; the model
is fine-tuned with core.training.finetune; the held-out and test queries are scored with exact
search (bench.chunk_quality), the test split also by whether a relevant document was trained
on. `--positives chunk` trains on the positive's best chunk instead of the whole item, the
text the index embeds; `--interpolate R ...` also scores the base and fine-tuned weights mixed
at each fine-tuned share R; `--save-model DIR` keeps the fine-tuned model. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, get_args

import numpy as np
from rich.console import Console
from rich.progress import Progress

from bench.beir import Qrels, paired_change, read_dataset, split_held_out
from bench.chunk_quality import (
    Encode,
    best_chunk_scores,
    cached_vectors,
    chunk_corpus,
    cpu_encoder,
    fold_to_documents,
    ndcg_by_query,
)
from bench.quality import QualityConfig
from core.adapters.triton_model.onnx_form import linear_map
from core.base_model import base_model_dir
from core.bootstrap import build_chunker
from core.config import get_settings
from core.training.dataset import Example, TrainingDataset, item_text
from core.training.finetune import FineTuneConfig, fine_tune
from core.training.linear_map import LinearMapConfig, map_examples, train_linear_map, train_map
from core.training.mining import MiningConfig, select_negatives
from core.training.runtime import load_model
from schemas.training import Recipe

# (query position, document position) -> the text trained on
TextOf = Callable[[int, int], str]


def mined_examples(
    qids: Sequence[str], qrels: Qrels, queries: dict[str, str], scores: np.ndarray, doc_ids: Sequence[str],
    text_of: TextOf, config: MiningConfig, shown_k: int = 0,
) -> tuple[list[Example], list[Example], int]:
    """(triples, pairs without a negative, candidates the false-negative filter skipped):
    `config.per_pair` negatives per judged pair, as the platform mines them from `scores`
    (queries x documents). With `shown_k`, only the pairs whose item ranks in the top
    `shown_k`: what a session that showed that many results would have clicked."""
    position = {d: i for i, d in enumerate(doc_ids)}
    triples: list[Example] = []
    pairs: list[Example] = []
    skipped = 0
    for qi, q in enumerate(qids):
        row = scores[qi]
        order = np.argsort(-row)
        ranked = [(doc_ids[j], float(row[j])) for j in order[: config.depth]]
        judged = frozenset(qrels[q])
        shown = {doc_ids[j] for j in order[:shown_k]}
        for item in qrels[q]:
            if item not in position or (shown_k and item not in shown):
                continue
            chosen, s = select_negatives(ranked, item, float(row[position[item]]), judged, config)
            skipped += s
            positive = text_of(qi, position[item])
            for negative in chosen:
                triples.append(Example(queries[q], positive, text_of(qi, position[negative])))
            if not chosen:
                pairs.append(Example(queries[q], positive))
    return triples, pairs, skipped


def interpolate(base_dir: Path, tuned_dir: Path, out_dir: Path, ratio: float) -> None:
    """Save to `out_dir` the model whose every weight is `ratio` of the fine-tuned one and the
    rest the base's (weight-space ensembling, "WiSE-FT"): 1 is the fine-tuned model, 0 the base."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio: {ratio} is outside 0..1; give the fine-tuned model's share")
    tuned = load_model(tuned_dir, "cpu")
    base = load_model(base_dir, "cpu").state_dict()
    merged = {}
    for name, weight in tuned.state_dict().items():
        if name not in base or base[name].shape != weight.shape:
            raise ValueError(f"{tuned_dir} and {base_dir} differ at {name}; "
                             "interpolate a fine-tuned model with its own base")
        merged[name] = ratio * weight + (1.0 - ratio) * base[name] if weight.is_floating_point() else weight
    tuned.load_state_dict(merged)
    out_dir.mkdir(parents=True, exist_ok=True)
    tuned.save(str(out_dir))


def normalized(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def mean(per_query: dict[str, float]) -> float | None:
    return round(sum(per_query.values()) / len(per_query), 4) if per_query else None


# (an encoder, the corpus's chunk vectors) -> per split, each query's nDCG@10
Score = Callable[[Encode, np.ndarray], dict[str, dict[str, float]]]


def sweep_maps(encode: Encode, base_chunks: np.ndarray, data: TrainingDataset,
               variants: Sequence[LinearMapConfig], score: Score) -> dict[str, dict[str, dict[str, float]]]:
    """A linear map trained with each of `variants` on one embedding of `data` (the map
    leaves the transformer as it is, so the base's vectors, mapped, are the new ones): per
    variant ("E epochs, identity W"), `score`'s per-query nDCG@10 by split."""
    examples = map_examples(data)
    query_vectors, text_vectors = encode(examples.queries), encode(examples.texts)
    # The base model's vectors of the scored queries, embedded on first use only: every
    # variant scores the same queries.
    known: dict[str, np.ndarray] = {}

    def base_vectors(texts: list[str]) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in known]
        if new:
            known.update(zip(new, encode(new), strict=True))
        return np.stack([known[t] for t in texts])

    found = {}
    for config in variants:
        weight, _ = train_map(query_vectors, text_vectors, examples, config)

        def mapped(texts: list[str], w: np.ndarray = weight) -> np.ndarray:
            return normalized(base_vectors(texts) @ w)
        found[f"{config.epochs} epochs, identity {config.identity_weight:g}"] = score(
            mapped, normalized(base_chunks @ weight))
    return found


def run(dataset: Path, epochs: int, positives: str, learning_rate: float, out: Path,
        progress: Progress, frozen_layers: int = 0, ratios: Sequence[float] = (),
        mined_negatives: int = 1, shown_k: int = 0, base_cache: Path | None = None,
        batch_size: int = FineTuneConfig.batch_size, recipe: Recipe = "fine-tune",
        map_epochs: Sequence[int] = (), identity_weights: Sequence[float] = ()) -> dict[str, Any]:
    began = time.perf_counter()
    identity_weight = identity_weights[0] if identity_weights else 0.0
    settings = get_settings()
    data = read_dataset(dataset)
    doc_ids = [d.id for d in data.docs]
    chunks, chunk_owner = chunk_corpus(build_chunker(settings), data.docs)
    base = base_model_dir(settings)
    # Split as `bench quality --source judgments` splits the uploads.
    trained, held_out = split_held_out(data.train, QualityConfig.held_out_fraction)

    def per_query(encode: Encode, chunk_vectors: np.ndarray, qrels: Qrels) -> dict[str, float]:
        if not qrels:
            return {}
        query_vectors = encode([data.queries[q] for q in qrels])
        scores = best_chunk_scores(query_vectors, chunk_vectors, chunk_owner, len(doc_ids))
        return ndcg_by_query(scores, doc_ids, list(qrels), qrels)

    trained_docs = {item for judged in trained.values() for item in judged}
    splits: dict[str, Qrels] = {"held_out_train": held_out, "test": data.test}
    for name, qrels in (("held_out", held_out), ("test", data.test)):  # a relevant item trained on or not
        seen = {q: j for q, j in qrels.items() if any(item in trained_docs for item in j)}
        splits[f"{name}_doc_trained"] = seen
        splits[f"{name}_doc_unseen"] = {q: j for q, j in qrels.items() if q not in seen}

    _, encode = cpu_encoder(base)
    base_chunks = cached_vectors(encode, chunks, base_cache)
    trained_ids = list(trained)
    chunk_scores = encode([data.queries[q] for q in trained_ids]) @ base_chunks.T
    base_ndcg = {name: per_query(encode, base_chunks, qrels) for name, qrels in splits.items()}

    def text_of(qi: int, doc: int) -> str:
        if positives == "whole":
            return item_text(data.docs[doc].title, data.docs[doc].text)
        own = np.flatnonzero(chunk_owner == doc)
        return chunks[own[np.argmax(chunk_scores[qi, own])]]

    scores = fold_to_documents(chunk_scores, chunk_owner, len(doc_ids))
    triples, pairs, skipped = mined_examples(trained_ids, trained, data.queries, scores, doc_ids, text_of,
                                             MiningConfig(per_pair=mined_negatives), shown_k)
    steps = progress.add_task("fine-tuning", total=None)
    tune = FineTuneConfig(epochs=epochs, learning_rate=learning_rate, frozen_layers=frozen_layers,
                          batch_size=batch_size)

    def report_step(done: int, total: int) -> None:
        progress.update(steps, completed=done, total=total)

    def scored(encode: Encode, chunk_vectors: np.ndarray) -> dict[str, dict[str, float]]:
        return {name: per_query(encode, chunk_vectors, qrels) for name, qrels in splits.items()}

    swept: dict[str, dict[str, dict[str, float]]] = {}
    if recipe == "linear-map":  # contrasted against every item, as the trainer reads the tenant's
        corpus = {d.id: item_text(d.title, d.text) for d in data.docs}
        examples = TrainingDataset(triples=triples, pairs=pairs, corpus={"": corpus})
        map_config = LinearMapConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                                     identity_weight=identity_weight)
        variants = [replace(map_config, epochs=e, identity_weight=w)
                    for e in map_epochs or [epochs] for w in identity_weights or [0.0]]
        if len(variants) > 1 or map_epochs:
            swept = sweep_maps(encode, base_chunks, examples, variants, scored)
        result = train_linear_map(base, out, examples, map_config, report_step)
    else:
        result = fine_tune(base, out, TrainingDataset(triples=triples, pairs=pairs), tune, report_step)
    tuned_model, encode = cpu_encoder(out)
    weight = linear_map(tuned_model)
    # A map leaves the transformer as it was: the base's chunk vectors, mapped, are the new ones.
    tuned_chunks = encode(chunks) if weight is None else normalized(base_chunks @ weight)
    tuned_ndcg = scored(encode, tuned_chunks)
    interpolated: dict[str, dict[str, float | None]] = {}
    for ratio in ratios:  # each: the corpus embedded again by the merged model
        with tempfile.TemporaryDirectory(prefix="finetune-split-merged-") as merged:
            interpolate(base, out, Path(merged), ratio)
            _, merged_encode = cpu_encoder(Path(merged))
        merged_chunks = merged_encode(chunks)
        interpolated[str(ratio)] = {name: mean(per_query(merged_encode, merged_chunks, qrels))
                                    for name, qrels in splits.items()}
    return {
        "dataset": data.name, "epochs": epochs, "positives": positives, "learning_rate": learning_rate,
        "frozen_layers": frozen_layers, "mined_negatives": mined_negatives, "shown_k": shown_k,
        "batch_size": batch_size, "recipe": recipe,
        "steps": result.steps, "triples": len(triples), "pairs": len(pairs), "mined_skipped": skipped,
        "splits": {name: {"queries": len(qrels), "base": mean(base_ndcg[name]),
                          "fine_tuned": mean(tuned_ndcg[name]),
                          **paired_change(base_ndcg[name], tuned_ndcg[name])}
                   for name, qrels in splits.items()},
        "interpolated": interpolated,
        "identity_weight": identity_weight,
        "maps": {count: {name: {"fine_tuned": mean(ndcg), **paired_change(base_ndcg[name], ndcg)}
                               for name, ndcg in by_split.items()} for count, by_split in swept.items()},
        "seconds": round(time.perf_counter() - began, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("dataset", type=Path, help="a BEIR folder with qrels/train.tsv and qrels/test.tsv")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--positives", choices=["whole", "chunk"], default="whole",
                        help="train on the whole item (as the trainer does) or on its best chunk")
    parser.add_argument("--learning-rate", type=float, default=FineTuneConfig.learning_rate)
    parser.add_argument("--frozen-layers", type=int, default=0, metavar="N",
                        help="leave the token embeddings and the lowest N transformer layers untrained")
    parser.add_argument("--save-model", type=Path, default=None, metavar="DIR",
                        help="keep the fine-tuned model in DIR (e.g. for bench.fusion_quality --model)")
    parser.add_argument("--interpolate", type=float, nargs="*", default=[], metavar="RATIO",
                        help="also score the base and fine-tuned weights mixed at each RATIO "
                             "(the fine-tuned share)")
    parser.add_argument("--mined-negatives", type=int, default=MiningConfig.per_pair, metavar="N",
                        help="negatives mined per pair (0: in-batch negatives only)")
    parser.add_argument("--shown-k", type=int, default=0, metavar="K",
                        help="train only the pairs whose item the base model ranks in its top K, as "
                             "sessions showing K results would click (0: every pair)")
    parser.add_argument("--batch-size", type=int, default=FineTuneConfig.batch_size, metavar="N",
                        help="examples per optimiser step; each is an in-batch negative for the others")
    parser.add_argument("--recipe", choices=get_args(Recipe), default="fine-tune",
                        help="train the transformer, or a linear map after it against every item "
                             "(--learning-rate: give the map's, e.g. 1e-3)")
    parser.add_argument("--map-epochs", type=int, nargs="*", default=[], metavar="N",
                        help="with --recipe linear-map: also train and score a map for each N epochs "
                             "(and each --identity-weight; the texts embedded once)")
    parser.add_argument("--identity-weight", type=float, nargs="*", default=[], metavar="W",
                        help="with --recipe linear-map: the map's ||W - I||² weight (the first one "
                             "for the saved model; each one scored with --map-epochs)")
    parser.add_argument("--base-vectors", type=Path, default=None, metavar="FILE.npy",
                        help="reuse the base model's chunk vectors from FILE (written on the first run)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="finetune-split-") as scratch, Progress(
            console=Console(stderr=True), transient=True) as progress:
        out = args.save_model or Path(scratch)
        report = run(args.dataset, args.epochs, args.positives, args.learning_rate, out, progress,
                     args.frozen_layers, args.interpolate, args.mined_negatives, args.shown_k,
                     args.base_vectors, args.batch_size, args.recipe, args.map_epochs,
                     args.identity_weight)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
