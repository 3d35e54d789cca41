"""`flywheel bench gpu`: the prepared check for a machine with a CUDA GPU (under 10 minutes).

On the GPU, with the model Triton serves (the active version's weights, else the base model):
- in-process torch: texts/s of sentence-transformers encode in fp32 and in fp16;
- through Triton: texts/s of the same texts sent through the bulk lane of the running stack's
  Triton (skipped, with the reason, when no Triton answers), with the instance kind its model
  configuration names (KIND_GPU: decided by the process that wrote the repository on Triton's
  machine; no kind: Triton picks, as under compose);
- training: optimiser steps/s of core.training.finetune.fine_tune (the trainer's own loop) on
  synthetic (query, positive, negative) triples, timed from the first step to the last.
Without CUDA it refuses up front ("no CUDA device") and measures nothing: CPU numbers are
`bench ingest` and `bench embeddings`.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.progress import Progress

from bench.corpus import synthetic_corpus
from bench.runtime import load_local_model, machine_info, open_stack
from bench.stats import rate
from core.adapters.triton_repository import read_serving_decision, version_root
from core.config import Settings
from core.embeddings import served_model_dir

LIMIT_S = 600


class NoCuda(RuntimeError):
    """No CUDA device: the GPU check measures nothing."""


@dataclass
class GpuConfig:
    texts: int = 4096
    batch: int = 128
    train_steps: int = 50
    train_batch: int = 32
    triton: bool = True
    version: str | None = None  # default: the serving version of new tenants
    timeout_s: float = 120.0  # for each request to Triton


def validate(config: GpuConfig) -> None:
    """Argument checks (the CLI checks ranges too); raises ValueError naming the option."""
    if config.texts < 1:
        raise ValueError("--texts must be at least 1")
    if config.batch < 1:
        raise ValueError("--batch must be at least 1")
    if config.train_steps < 2:
        raise ValueError("--train-steps must be at least 2 (steps/s is timed from the first to the last)")
    if config.train_batch < 2:
        raise ValueError("--train-batch must be at least 2 (in-batch negatives)")
    if config.timeout_s <= 0:
        raise ValueError("--timeout must be positive")


def cuda_problem(available: bool, torch_version: str, cuda_build: str | None) -> str | None:
    """Why the check cannot run, or None when a CUDA device is there."""
    if available:
        return None
    build = f"built for CUDA {cuda_build}" if cuda_build else "built without CUDA"
    return (f"no CUDA device: torch {torch_version} ({build}) sees no GPU; run `flywheel bench gpu` on a "
            "machine with an NVIDIA GPU (CPU figures: `flywheel bench ingest`, `flywheel bench embeddings`)")


def require_cuda() -> str:
    """The GPU's name; raises NoCuda otherwise."""
    import torch

    problem = cuda_problem(torch.cuda.is_available(), torch.__version__, torch.version.cuda)
    if problem:
        raise NoCuda(problem)
    return str(torch.cuda.get_device_name(0))


def texts_for(config: GpuConfig) -> list[str]:
    return [f"{doc.title}\n{doc.text}" for doc in synthetic_corpus(config.texts)]


def encode_rate(model: Any, texts: list[str], batch: int) -> float:
    import torch

    model.encode(texts[:batch], batch_size=batch, show_progress_bar=False)  # warm-up
    torch.cuda.synchronize()
    began = time.perf_counter()
    with torch.inference_mode():
        model.encode(texts, batch_size=batch, show_progress_bar=False, convert_to_numpy=True)
    torch.cuda.synchronize()
    return rate(len(texts), time.perf_counter() - began)


def training_rate(model_dir: Path, config: GpuConfig) -> dict[str, Any]:
    from core.training.dataset import Example, TrainingDataset
    from core.training.finetune import FineTuneConfig, fine_tune

    docs = synthetic_corpus(config.train_steps * config.train_batch * 2 + 1, start=900_000)
    # Unique anchors (a document's first words), so no batch loses examples to repeated texts.
    triples = [Example(" ".join(docs[i].text.split()[:8]), docs[i].text, docs[i + 1].text)
               for i in range(0, config.train_steps * config.train_batch * 2, 2)]
    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as out:
        result = fine_tune(model_dir, Path(out) / "model", TrainingDataset(triples=triples),
                           FineTuneConfig(batch_size=config.train_batch, mini_batch_size=0),
                           progress=lambda step, _: stamps.append(time.perf_counter()))
    return {"device": result.device, "steps": result.steps, "batch_size": config.train_batch,
            "steps_per_s": round(rate(len(stamps) - 1, stamps[-1] - stamps[0]), 2),
            "seconds_with_load_and_save": round(result.seconds, 1)}


def instance_kind(settings: Settings) -> str | None:
    """The kind the served model's config.pbtxt names (None: Triton picks, or no local repository)."""
    config = version_root(settings.triton_repository, settings.triton_model_name, 1) / "config.pbtxt"
    if not config.is_file():
        return None
    for kind in ("KIND_GPU", "KIND_CPU"):
        if kind in config.read_text():
            return kind
    return None


async def triton_rate(settings: Settings, texts: list[str], version: str, timeout_s: float) -> dict[str, Any]:
    async with open_stack(settings, ingest=False) as stack:
        await stack.embedder.embed(texts[:64], version, lane="bulk")  # warm-up
        began = time.perf_counter()
        await asyncio.wait_for(stack.embedder.embed(texts, version, lane="bulk"), timeout_s)
        seconds = time.perf_counter() - began
    return {"texts_per_s": round(rate(len(texts), seconds), 1), "instance_kind": instance_kind(settings),
            "serving": read_serving_decision(settings.triton_repository, settings.triton_model_name, version)}


async def run_gpu(settings: Settings, config: GpuConfig, progress: Progress) -> dict[str, Any]:
    validate(config)
    gpu = require_cuda()
    from core.serving import BASE_SERVING_VERSION

    began = time.perf_counter()
    version = config.version or BASE_SERVING_VERSION
    texts = texts_for(config)
    report: dict[str, Any] = {"bench": "gpu", "gpu": gpu, "texts": len(texts), "batch": config.batch,
                              "model_version": version}
    with progress:
        task = progress.add_task("in-process torch fp32, fp16", total=2)
        local = await asyncio.to_thread(load_local_model, settings, version)
        fp32 = await asyncio.to_thread(encode_rate, local.model, texts, config.batch)
        progress.advance(task)
        local.model.half()
        fp16 = await asyncio.to_thread(encode_rate, local.model, texts, config.batch)
        progress.advance(task)
        report["in_process"] = {"device": local.device, "fp32_texts_per_s": round(fp32, 1),
                                "fp16_texts_per_s": round(fp16, 1)}
        del local
        report["triton"] = None
        if config.triton:
            task = progress.add_task("through Triton (bulk lane)", total=None)
            try:
                report["triton"] = await triton_rate(settings, texts, version, config.timeout_s)
                best = max(fp32, fp16)
                report["ratio_triton_to_in_process_best"] = round(report["triton"]["texts_per_s"] / best, 3)
            except Exception as error:
                report["triton_skipped"] = f"{type(error).__name__}: {error}"
            progress.update(task, total=1, completed=1)
        task = progress.add_task(f"training ({config.train_steps} steps)", total=None)
        model_dir = served_model_dir(settings, version)
        report["training"] = await asyncio.to_thread(training_rate, model_dir, config)
        progress.update(task, total=1, completed=1)
    report["seconds"] = round(time.perf_counter() - began, 1)
    report["machine"] = machine_info()
    return report
