"""`flywheel bench ingest`: documents/s from publish to searchable, against in-process
sentence-transformers on the same texts, and publish-to-searchable freshness at a steady rate.

1. Throughput: N documents are published to content-upserted under a fresh tenant; the clock
   stops when all N are in pgvector (items and their chunk vectors are written in one
   transaction, so a counted item is searchable).
2. Baseline: the same texts, chunked exactly as the indexer chunks them, encoded in-process by
   the same model in batches of Triton's max batch size (what one Triton execution gets).
3. Freshness: M further documents published one by one at a steady rate; pgvector is polled
   for the ids not yet seen; each latency runs from just before the send to the start of the
   first poll that saw the item (an upper bound, at most one poll interval plus a query late).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.progress import Progress

from bench.corpus import Doc, corpus_docs, synthetic_corpus
from bench.runtime import Stack, load_local_model, machine_info, open_stack
from bench.stats import rate, summarize
from core.adapters.triton_repository import read_serving_decision
from core.bootstrap import build_chunker
from core.config import Settings
from schemas.topics import CONTENT_UPSERTED

PUBLISH_SLICE = 500
MAX_AUTO_RATE = 50.0


class IngestTimeout(RuntimeError):
    """The documents did not all become searchable in time."""


@dataclass
class IngestConfig:
    n: int = 2000
    fresh_n: int = 200
    rate: float | None = None  # None: half the measured pipeline throughput, at most MAX_AUTO_RATE
    corpus: Path | None = None
    tenant: str | None = None
    batch_size: int | None = None  # baseline encode batch; default: Triton's max batch size
    timeout_s: float = 600.0
    poll_interval_s: float = 0.02
    baseline: bool = True
    threads: int | None = None  # torch threads of the in-process baseline


@dataclass
class Throughput:
    documents: int
    seconds: float
    publish_seconds: float
    first_searchable_seconds: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "documents": self.documents,
            "seconds": round(self.seconds, 3),
            "docs_per_s": round(rate(self.documents, self.seconds), 2),
            "publish_seconds": round(self.publish_seconds, 3),
            "first_searchable_seconds": (
                None if self.first_searchable_seconds is None else round(self.first_searchable_seconds, 3)
            ),
        }


@dataclass
class IngestReport:
    tenant: str
    corpus: str
    chunks: int
    pipeline: Throughput
    baseline: dict[str, Any] | None
    freshness: dict[str, Any] | None
    model_version: str | None
    machine: dict[str, Any] = field(default_factory=machine_info)
    # The form Triton served the version in (its serving.json), when the repository is local.
    serving: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        pipeline = self.pipeline.to_dict()
        ratio = None
        if self.baseline and self.baseline["docs_per_s"]:
            ratio = round(pipeline["docs_per_s"] / self.baseline["docs_per_s"], 3)
        return {
            "bench": "ingest",
            "tenant": self.tenant,
            "corpus": self.corpus,
            "documents": self.pipeline.documents,
            "chunks": self.chunks,
            "model_version": self.model_version,
            "serving_form": self.serving.get("form") if self.serving else None,
            "serving": self.serving,
            "pipeline": pipeline,
            "baseline": self.baseline,
            "ratio_pipeline_to_baseline": ratio,
            "freshness": self.freshness,
            "machine": self.machine,
        }


def default_tenant() -> str:
    return "bench-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S")


async def publish_until_searchable(
    stack: Stack, docs: Sequence[Doc], tenant: str, progress: Progress, timeout_s: float
) -> Throughput:
    """Publish every document, then wait until the tenant holds all of them."""
    publisher = await stack.ensure_publisher()
    target = len({doc.id for doc in docs})
    began = time.perf_counter()
    sending = progress.add_task(f"publishing {len(docs)} documents", total=len(docs))
    for start in range(0, len(docs), PUBLISH_SLICE):
        part = docs[start : start + PUBLISH_SLICE]
        await publisher.publish_many(CONTENT_UPSERTED, [doc.event(tenant) for doc in part])
        progress.advance(sending, len(part))
    published = time.perf_counter() - began

    waiting = progress.add_task("waiting until searchable", total=target)
    first: float | None = None
    while True:
        count = await stack.store.count_items(tenant)
        now = time.perf_counter() - began
        progress.update(waiting, completed=count)
        if count and first is None:
            first = now
        if count >= target:
            return Throughput(len(docs), now, published, first)
        if now > timeout_s:
            raise IngestTimeout(
                f"only {count} of {target} documents searchable after {timeout_s:.0f}s: is the indexer "
                "consuming? (see its log under the stack's state directory)"
            )
        await asyncio.sleep(0.05)


def baseline_encode(
    settings: Settings, texts: Sequence[str], documents: int, batch_size: int, progress: Progress,
    version: str | None, threads: int | None = None,
) -> dict[str, Any]:
    """In-process sentence-transformers on the same chunk texts, batch by batch as Triton gets them."""
    task = progress.add_task("baseline: loading the model", total=None)
    model = load_local_model(settings, version, threads)
    model.encode(list(texts[:batch_size]), batch_size)  # warm-up, not timed
    progress.update(task, description="baseline: in-process encode", total=len(texts), completed=0)
    began = time.perf_counter()
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start : start + batch_size])
        model.encode(batch, batch_size)
        progress.advance(task, len(batch))
    seconds = time.perf_counter() - began
    return {
        "documents": documents,
        "texts": len(texts),
        "seconds": round(seconds, 3),
        "docs_per_s": round(rate(documents, seconds), 2),
        "texts_per_s": round(rate(len(texts), seconds), 2),
        "batch_size": batch_size,
        "device": model.device,
        "torch_threads": model.threads,
        "model_dir": str(model.path),
    }


async def measure_freshness(
    stack: Stack, docs: Sequence[Doc], tenant: str, per_second: float, poll_interval_s: float,
    progress: Progress, timeout_s: float,
) -> dict[str, Any]:
    publisher = await stack.ensure_publisher()
    published: dict[str, float] = {}
    seen: dict[str, float] = {}
    acks: list[asyncio.Future[Any]] = []
    sent_task = progress.add_task(f"freshness: publishing at {per_second:g}/s", total=len(docs))
    seen_task = progress.add_task("freshness: searchable", total=len(docs))

    async def publish() -> None:
        start = time.perf_counter()
        for number, doc in enumerate(docs):
            delay = start + number / per_second - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            record = publisher.prepare(CONTENT_UPSERTED, doc.event(tenant))
            published[doc.id] = time.perf_counter()
            acks.append(await publisher.enqueue(record))
            progress.advance(sent_task)
        await asyncio.gather(*acks)

    async def poll() -> None:
        deadline = time.perf_counter() + len(docs) / per_second + timeout_s
        while len(seen) < len(docs):
            polled_at = time.perf_counter()
            pending = [doc_id for doc_id in published if doc_id not in seen]
            if pending:
                for doc_id in await stack.store.describe(tenant, pending):
                    seen[doc_id] = polled_at
                progress.update(seen_task, completed=len(seen))
            if polled_at > deadline:
                raise IngestTimeout(
                    f"freshness: {len(docs) - len(seen)} of {len(docs)} documents not searchable "
                    f"{timeout_s:.0f}s after the last publish"
                )
            await asyncio.sleep(max(0.0, polled_at + poll_interval_s - time.perf_counter()))

    await asyncio.gather(publish(), poll())
    latencies = [(seen[doc_id] - sent) * 1000 for doc_id, sent in published.items()]
    summary = summarize(latencies)
    sends = sorted(published.values())
    span = sends[-1] - sends[0] if len(sends) > 1 else 0.0
    return {
        "documents": len(docs),
        "target_rate_per_s": per_second,
        "achieved_rate_per_s": round(rate(len(sends) - 1, span), 2),
        "poll_interval_ms": round(poll_interval_s * 1000, 1),
        "p50_ms": round(summary.p50, 1),
        "p99_ms": round(summary.p99, 1),
        "latency_ms": summary.to_dict(1),
    }


def steady_rate(throughput: float) -> float:
    """A publish rate the pipeline sustains: half its measured throughput, at most MAX_AUTO_RATE/s."""
    return round(max(0.5, min(MAX_AUTO_RATE, throughput / 2)), 1)


def fresh_docs(config: IngestConfig, docs: Sequence[Doc]) -> list[Doc]:
    """Documents for the freshness run, none of them among the throughput documents."""
    if config.corpus is None:
        return synthetic_corpus(config.fresh_n, start=config.n)
    more = corpus_docs(config.corpus, config.n + config.fresh_n)[len(docs):]
    if len(more) >= config.fresh_n:
        return more[: config.fresh_n]
    # A short corpus: its texts again, under new ids.
    reused = [Doc(f"{d.id}-fresh{i}", d.title, d.text, d.metadata) for i, d in enumerate(docs)]
    return (more + reused)[: config.fresh_n]


def corpus_label(path: Path | None) -> str:
    return "synthetic" if path is None else str(path)


async def run_ingest(settings: Settings, config: IngestConfig, progress: Progress) -> IngestReport:
    docs = corpus_docs(config.corpus, config.n)
    tenant = config.tenant or default_tenant()
    chunker = build_chunker(settings)
    texts = [text for doc in docs for text in chunker.split_item(doc.title, doc.text)]
    batch_size = config.batch_size or settings.triton_max_batch_size
    machine = machine_info()  # before the run: its load average is the other work's
    async with open_stack(settings, ingest=True) as stack:
        if await stack.store.count_items(tenant):
            raise ValueError(f"tenant {tenant!r} already holds items; ingest needs a fresh tenant")
        with progress:
            pipeline = await publish_until_searchable(stack, docs, tenant, progress, config.timeout_s)
            version = await stack.store.active_version(tenant)
            # After the pipeline is idle, so the two never compete for the same cores.
            baseline = None
            if config.baseline:
                baseline = await asyncio.to_thread(
                    baseline_encode, settings, texts, len(docs), batch_size, progress, version, config.threads
                )
            freshness = None
            if config.fresh_n > 0:
                per_second = config.rate or steady_rate(rate(pipeline.documents, pipeline.seconds))
                freshness = await measure_freshness(
                    stack, fresh_docs(config, docs), tenant, per_second, config.poll_interval_s,
                    progress, min(config.timeout_s, 120.0),
                )
                capacity = rate(pipeline.documents, pipeline.seconds)
                freshness["rate_chosen"] = "given" if config.rate else "auto: half the pipeline throughput"
                freshness["saturated"] = per_second > capacity
                if per_second > capacity:
                    freshness["warning"] = (
                        f"{per_second:g}/s is above the measured throughput ({capacity:.1f} docs/s): "
                        "the latencies include a growing backlog"
                    )
    serving = read_serving_decision(settings.triton_repository, settings.triton_model_name, version or "1")
    return IngestReport(
        tenant, corpus_label(config.corpus), len(texts), pipeline, baseline, freshness, version, machine,
        serving,
    )
