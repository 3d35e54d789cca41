"""Fine-tuning a sentence-transformers model with MultipleNegativesRankingLoss (PyTorch).

A plain, seeded training loop (no `datasets`/`accelerate` needed): (anchor, positive,
hard negative) triples and (anchor, positive) pairs go in separate batches, each batch
free of repeated texts (a repeated text would count as a false in-batch negative), the
batches shuffled together. CUDA when present, CPU otherwise. Blocking: the trainer service
runs it in a worker thread.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.training.dataset import Example, TrainingDataset
from core.training.runtime import Progress, TrainingResult, load_model, seed_everything, select_device
from schemas.training import Recipe

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

OPEN_BATCHES = 8


@dataclass(frozen=True)
class FineTuneConfig:
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 2e-5
    warmup_fraction: float = 0.1
    seed: int = 42
    # Texts per forward pass. Below batch_size, the loss is computed GradCache-style
    # (CachedMultipleNegativesRankingLoss): the same gradients as one pass over the batch,
    # with activation memory bounded by the mini-batch, not the batch (attention memory grows
    # with the square of the sequence length: 32 triples of 256 tokens take ~6 GB on CPU).
    mini_batch_size: int = 8
    # The token embeddings and this many of the lowest transformer layers are not trained:
    # what the base model knows of words it never sees in training stays as it was.
    frozen_layers: int = 0
    # "fine-tune" trains the transformer (this module); "linear-map" trains a map after it
    # against the tenant's corpus (core.training.linear_map), for `epochs` too.
    recipe: Recipe = "fine-tune"


def _texts(example: Example) -> set[str]:
    return {example.anchor, example.positive} | ({example.negative} if example.negative else set())


def make_batches(examples: Sequence[Example], batch_size: int, rng: random.Random) -> list[list[Example]]:
    """Shuffled batches in which no text occurs twice; one pass, a few batches open at once."""
    order = list(examples)
    rng.shuffle(order)
    done: list[list[Example]] = []
    open_batches: list[tuple[list[Example], set[str]]] = []
    for example in order:
        texts = _texts(example)
        for batch, seen in open_batches:
            if not texts & seen:
                batch.append(example)
                seen |= texts
                if len(batch) >= batch_size:
                    done.append(batch)
                    open_batches.remove((batch, seen))
                break
        else:
            if len(open_batches) >= OPEN_BATCHES:
                fullest = max(open_batches, key=lambda b: len(b[0]))
                open_batches.remove(fullest)
                done.append(fullest[0])
            open_batches.append(([example], set(texts)))
    done.extend(batch for batch, _ in open_batches)
    # Singleton batches teach nothing to an in-batch-negatives loss without a hard negative.
    return [b for b in done if len(b) > 1 or b[0].negative is not None]


def plan_batches(data: TrainingDataset, config: FineTuneConfig) -> list[list[Example]]:
    rng = random.Random(config.seed)
    batches: list[list[Example]] = []
    for _ in range(config.epochs):
        epoch = make_batches(data.triples, config.batch_size, rng) + make_batches(
            data.pairs, config.batch_size, rng
        )
        rng.shuffle(epoch)
        batches += epoch
    return batches


def freeze_lower_layers(model: SentenceTransformer, layers: int) -> list[Any]:
    """Stop training the token embeddings and the lowest `layers` transformer layers of a
    BERT-style model (none when `layers` is 0); returns the parameters still trained."""
    if layers > 0:
        encoder: Any = model[0].auto_model
        blocks = encoder.encoder.layer
        if layers > len(blocks):
            raise ValueError(f"frozen_layers: the model has {len(blocks)} layers; freeze at most that many")
        for module in (encoder.embeddings, *blocks[:layers]):
            for parameter in module.parameters():
                parameter.requires_grad = False
    return [p for p in model.parameters() if p.requires_grad]


def fine_tune(
    base_dir: Path, out_dir: Path, data: TrainingDataset, config: FineTuneConfig,
    progress: Progress | None = None,
) -> TrainingResult:
    """Train a copy of the model in `base_dir` on `data`; save it to `out_dir`."""
    import torch
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        MultipleNegativesRankingLoss,
    )
    from sentence_transformers.util import batch_to_device
    from transformers import get_linear_schedule_with_warmup

    started = time.monotonic()
    seed_everything(config.seed)
    device = select_device()
    model = load_model(base_dir, device)
    batches = plan_batches(data, config)
    if not batches:
        raise ValueError("no training batches: the dataset has no usable examples")
    loss_fn: torch.nn.Module = (
        CachedMultipleNegativesRankingLoss(model, mini_batch_size=config.mini_batch_size)
        if 0 < config.mini_batch_size < config.batch_size else MultipleNegativesRankingLoss(model)
    )
    trained = freeze_lower_layers(model, config.frozen_layers)
    optimizer = torch.optim.AdamW(trained, lr=config.learning_rate)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, math.ceil(config.warmup_fraction * len(batches)), len(batches)
    )
    model.train()
    losses: list[float] = []
    for step, batch in enumerate(batches, start=1):
        columns: list[list[str]] = [[e.anchor for e in batch], [e.positive for e in batch]]
        if batch[0].negative is not None:
            columns.append([e.negative or "" for e in batch])
        features = [batch_to_device(model.preprocess(column), model.device) for column in columns]
        loss = loss_fn(features, None)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step, len(batches))
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(str(out_dir))
    seconds = time.monotonic() - started
    log.info("fine-tuned %d steps on %s in %.1fs, mean loss %.4f", len(batches), device, seconds,
             sum(losses) / len(losses))
    return TrainingResult(len(batches), seconds, device, sum(losses) / len(losses), losses[-1])
