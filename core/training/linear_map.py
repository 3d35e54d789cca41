"""The `linear-map` training recipe: a learned linear map after the model, contrasted against
the tenant's whole corpus.

The model's own weights stay as they are. Its embeddings of the training queries, their
positives and a sample of the tenant's items are computed once; a square matrix `W`, starting
at the identity, is trained so that `normalize(q W)` scores each query's positive above every
other text (softmax cross-entropy over all of them at `scale`, a query's other positives
masked). The map applies to queries and items alike: the saved model is the base with a
bias-free `Dense` module holding `W` and a `Normalize` after it, so it deploys, serves and
reindexes as any model does.

Why against the whole corpus: in-batch negatives (what fine-tuning the transformer sees) never
show the model the many items that outrank a positive; the whole corpus does, and with the
embeddings fixed each step costs one matrix product. On scifact-dev's test claims it gains
where fine-tuning the transformer does not (docs/benchmarks.md).

A model that already ends with such a map gets one map: `normalize(normalize(x A) W)` is
`normalize(x A W)`, so the two fold into `A W`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.training.dataset import TrainingDataset
from core.training.runtime import Progress, TrainingResult, load_model, seed_everything, select_device

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LinearMapConfig:
    epochs: int = 5  # chosen on held-out queries (docs/benchmarks.md); FLYWHEEL_TRAINING_MAP_EPOCHS
    batch_size: int = 32
    learning_rate: float = 1e-3
    scale: float = 20.0  # the softmax's inverse temperature over cosines
    # Weight of ||W - I||² in the loss: how hard the map is held near the identity, so that
    # what the pairs never showed (new items, other topics) keeps the model's own geometry.
    identity_weight: float = 0.0
    seed: int = 42
    encode_batch_size: int = 64


@dataclass(frozen=True)
class MapExamples:
    """Each training pair as (query row, positive row): rows of `queries` and `texts`."""

    queries: list[str]
    texts: list[str]
    pairs: list[tuple[int, int]]
    # For each query row, the rows of all its positives (masked as negatives of one another).
    positives: dict[int, frozenset[int]]


def map_examples(data: TrainingDataset) -> MapExamples:
    """The distinct queries and texts of `data`'s pairs and triples (a triple's negative
    joins the texts: every text is a negative of every other query), and its corpus."""
    queries: dict[str, int] = {}
    texts: dict[str, int] = {}
    pairs: set[tuple[int, int]] = set()
    for example in [*data.triples, *data.pairs]:
        q = queries.setdefault(example.anchor, len(queries))
        pairs.add((q, texts.setdefault(example.positive, len(texts))))
        if example.negative is not None:
            texts.setdefault(example.negative, len(texts))
    for pool in data.corpus.values():
        for text in pool.values():
            texts.setdefault(text, len(texts))
    positives: dict[int, set[int]] = {}
    for q, t in pairs:
        positives.setdefault(q, set()).add(t)
    return MapExamples(list(queries), list(texts), sorted(pairs),
                       {q: frozenset(ts) for q, ts in positives.items()})


def train_map(query_vectors: np.ndarray, text_vectors: np.ndarray, examples: MapExamples,
              config: LinearMapConfig, progress: Progress | None = None,
              done_before: int = 0, total_work: int | None = None) -> tuple[np.ndarray, list[float]]:
    """The square map (identity at the start) and each step's loss. `progress` is called
    after each step with (`done_before` + steps, `total_work`, by default the steps)."""
    import torch

    generator = torch.Generator().manual_seed(config.seed)
    queries = torch.from_numpy(np.ascontiguousarray(query_vectors, dtype=np.float32))
    texts = torch.from_numpy(np.ascontiguousarray(text_vectors, dtype=np.float32))
    pairs = torch.tensor(examples.pairs, dtype=torch.long)
    dim = queries.shape[1]
    identity = torch.eye(dim)
    weight = torch.nn.Parameter(identity.clone())
    optimizer = torch.optim.Adam([weight], lr=config.learning_rate)
    per_epoch = -(-len(pairs) // config.batch_size)
    total = per_epoch * config.epochs
    losses: list[float] = []
    for _ in range(config.epochs):
        order = torch.randperm(len(pairs), generator=generator)
        for start in range(0, len(pairs), config.batch_size):
            batch = pairs[order[start : start + config.batch_size]]
            q = torch.nn.functional.normalize(queries[batch[:, 0]] @ weight, dim=-1)
            t = torch.nn.functional.normalize(texts @ weight, dim=-1)
            logits = config.scale * q @ t.T
            mask = torch.zeros_like(logits, dtype=torch.bool)
            for row, (qi, ti) in enumerate(batch.tolist()):
                others = [p for p in examples.positives[qi] if p != ti]
                if others:
                    mask[row, others] = True
            loss = torch.nn.functional.cross_entropy(logits.masked_fill(mask, float("-inf")), batch[:, 1])
            if config.identity_weight > 0:
                loss = loss + config.identity_weight * (weight - identity).square().sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            if progress is not None:
                progress(done_before + len(losses), total_work or total)
    return weight.detach().numpy(), losses


def _ends_with_map(model: SentenceTransformer) -> bool:
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize

    modules: list[Any] = list(model)
    return (len(modules) >= 2 and isinstance(modules[-2], Dense) and isinstance(modules[-1], Normalize)
            and modules[-2].linear.bias is None)


def attach_map(model: SentenceTransformer, weight: np.ndarray) -> SentenceTransformer:
    """`model` followed by `normalize(x W)`: folded into its last map if it has one."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize

    new = torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32))
    modules: list[Any] = list(model)
    if _ends_with_map(model):
        previous = modules[-2].linear.weight.detach().cpu()  # nn.Linear: y = x @ weight.T
        new = previous.T @ new
        modules = modules[:-2]
    dense = Dense(new.shape[0], new.shape[1], bias=False, activation_function=torch.nn.Identity(),
                  init_weight=new.T.contiguous())
    return SentenceTransformer(modules=[*modules, dense, Normalize()], device=str(model.device))


def train_linear_map(base_dir: Path, out_dir: Path, data: TrainingDataset, config: LinearMapConfig,
                     progress: Progress | None = None) -> TrainingResult:
    """Train the map on the model in `base_dir` and save the mapped model to `out_dir`."""
    started = time.monotonic()
    seed_everything(config.seed)
    device = select_device()
    model = load_model(base_dir, device)
    examples = map_examples(data)
    if not examples.pairs:
        raise ValueError("no training pairs: the dataset has no usable examples")

    # Progress counts the embedding batches, then the optimiser steps: embedding the corpus is
    # most of a run's time on a CPU.
    size = config.encode_batch_size
    batches = -(-len(examples.queries) // size) + -(-len(examples.texts) // size)
    work = batches + -(-len(examples.pairs) // config.batch_size) * config.epochs
    embedded = 0

    def encode(texts: Sequence[str]) -> np.ndarray:
        nonlocal embedded
        parts = []
        for start in range(0, len(texts), size):
            parts.append(model.encode(list(texts[start : start + size]), batch_size=size,
                                      normalize_embeddings=True, convert_to_numpy=True,
                                      show_progress_bar=False))
            embedded += 1
            if progress is not None:
                progress(embedded, work)
        return np.asarray(np.vstack(parts), dtype=np.float32)

    weight, losses = train_map(encode(examples.queries), encode(examples.texts), examples, config, progress,
                               batches, work)
    mapped = attach_map(model, weight)
    out_dir.mkdir(parents=True, exist_ok=True)
    mapped.save(str(out_dir))
    seconds = time.monotonic() - started
    log.info("trained a linear map on %d pairs against %d texts in %.1fs, mean loss %.4f",
             len(examples.pairs), len(examples.texts), seconds, sum(losses) / len(losses))
    return TrainingResult(len(losses), seconds, device, sum(losses) / len(losses), losses[-1])
