"""`flywheel bench embeddings`: texts/s and latency of `POST /v1/embeddings` beside the same
texts encoded in-process by the same weights, in the same run.

- API: `texts` documents of the corpus sent in requests of `batch` texts, `concurrency` in
  flight, through the gateway (auth, limits, tokenizer counts, Triton's query lane, JSON).
- in-process: the same texts in the same batches encoded by sentence-transformers in this
  process, one batch at a time (the model takes every core), after the API run, so the two
  never share the cores. Model loading is not timed; both paths get a warm-up.
- ratio: API texts/s over in-process texts/s (1.0: the service costs nothing over the bare
  model), and the two p99s of one batch. Every API vector is compared with its in-process
  twin (cosine), so a fast but wrong answer cannot pass unnoticed.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.progress import Progress

from bench.corpus import corpus_docs
from bench.gateway import Call, LoadResult, Outcome, advance_bar, expect, probe_key, run_load
from bench.ingest import corpus_label
from bench.runtime import load_local_model, machine_info
from bench.stats import rate, summarize
from core.config import Settings


@dataclass(frozen=True)
class EmbeddingsConfig:
    texts: int = 512
    batch: int = 16  # texts per request (and per in-process encode call)
    concurrency: int = 4
    model: str = "active"
    api_key: str = ""
    corpus: Path | None = None
    warmup: int = 4  # unmeasured requests (and in-process batches) first
    timeout_s: float = 60.0  # per HTTP request
    threads: int | None = None  # torch threads of the in-process baseline


def requests_of_a_run(config: EmbeddingsConfig) -> int:
    return config.warmup + -(-config.texts // config.batch) + 2


def _texts(config: EmbeddingsConfig) -> list[str]:
    docs = corpus_docs(config.corpus, config.texts)
    texts = [f"{d.title}\n{d.text}" if d.title else d.text for d in docs]
    if len(texts) < config.texts:
        raise ValueError(f"the corpus holds {len(texts)} texts, fewer than --texts {config.texts}")
    return texts


def _row(result: LoadResult, texts: int) -> dict[str, Any]:
    return {**result.to_dict(), "texts_per_s": round(rate(texts, result.seconds), 2)}


async def run_embeddings(
    settings: Settings, config: EmbeddingsConfig, progress: Progress,
) -> dict[str, Any]:
    if not config.api_key:
        raise ValueError(
            f"no API key: pass --api-key or create one with `flywheel up` ({settings.api_key_file})")
    texts = _texts(config)
    batches = [texts[i : i + config.batch] for i in range(0, len(texts), config.batch)]
    vectors: dict[int, np.ndarray] = {}
    version = ""
    limits = httpx.Limits(max_connections=config.concurrency, max_keepalive_connections=config.concurrency)
    headers = {"Authorization": f"Bearer {config.api_key}"}
    with progress:
        async with httpx.AsyncClient(base_url=settings.gateway_url, headers=headers, timeout=config.timeout_s,
                                     limits=limits) as client:
            await probe_key(client, settings.gateway_url)

            def call(number: int, batch: list[str], keep: bool) -> Call:
                async def run() -> Outcome:
                    nonlocal version
                    response = await client.post("/v1/embeddings", json={
                        "input": batch, "model": config.model, "encoding_format": "base64"})
                    failed = expect(response, 200)
                    if failed is None and keep:
                        body = response.json()
                        version = body["model"]
                        vectors[number] = np.stack([np.frombuffer(_b64(d["embedding"]), dtype="<f4")
                                                    for d in body["data"]])
                    return failed
                return run

            await run_load([call(-1, batches[i % len(batches)], False) for i in range(config.warmup)],
                           config.concurrency)
            api = await run_load([call(n, b, True) for n, b in enumerate(batches)], config.concurrency,
                                 advance_bar(progress, "/v1/embeddings", len(batches)))
        if api.errors or not version:
            return _report(config, api, None, None, None, version)

        loading = progress.add_task("loading the in-process model", total=1)
        model = load_local_model(settings, version, config.threads)
        progress.update(loading, completed=1)
        for batch in batches[: config.warmup]:
            model.encode(batch, config.batch)
        task = progress.add_task("in-process encode", total=len(batches))
        local: list[np.ndarray] = []
        latencies: list[float] = []
        began = time.perf_counter()
        for batch in batches:
            start = time.perf_counter()
            local.append(np.asarray(model.encode(batch, config.batch), dtype=np.float32))
            latencies.append((time.perf_counter() - start) * 1000)
            progress.advance(task)
        baseline = LoadResult(time.perf_counter() - began, latencies)

    served = np.concatenate([vectors[n] for n in range(len(batches))])
    cosine = float(np.min(np.sum(served * np.concatenate(local), axis=1)))
    return _report(config, api, baseline, model.device, cosine, version, model.threads)


def _b64(text: str) -> bytes:
    return base64.b64decode(text)


def _report(
    config: EmbeddingsConfig, api: LoadResult, baseline: LoadResult | None, device: str | None,
    min_cosine: float | None, version: str, threads: int | None = None,
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "bench": "embeddings",
        "texts": config.texts,
        "batch": config.batch,
        "concurrency": config.concurrency,
        "corpus": corpus_label(config.corpus),
        "model": config.model,
        "model_version": version,
        "api": _row(api, config.texts),
        "in_process": _row(baseline, config.texts) if baseline else None,
        "baseline_device": device,
        "baseline_torch_threads": threads,
        "min_cosine_api_to_in_process": round(min_cosine, 6) if min_cosine is not None else None,
        "machine": machine_info(),
    }
    if baseline and api.latencies_ms:
        report["ratio_texts_per_s"] = round(
            rate(config.texts, api.seconds) / rate(config.texts, baseline.seconds), 3)
        report["ratio_p99"] = round(summarize(api.latencies_ms).p99 / summarize(baseline.latencies_ms).p99, 3)
    return report
