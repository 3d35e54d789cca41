"""`flywheel bench search --under-ingest`: search p99 while a bulk ingest runs beside it.

1. Idle: the queries, one at a time, through the search function (the query embedded in
   Triton's query lane, then the HNSW SQL), with nothing else of ours running.
2. Loaded: another tenant's bulk load (`load_n` synthetic documents, ids of their own) is
   published as fast as Kafka takes it, so the indexer embeds it through Triton's bulk lane
   at full speed; the same queries run again, one at a time, while it does. The indexer's lag on
   content-upserted is read when the loaded phase starts and ends, and the load tenant's
   searchable items are counted then (`backlog_*`: published, not yet searchable), so the report
   shows the ingest was busy throughout (`ingest_busy_throughout`: the load was not all
   searchable when the last query finished).
3. The ratio of the loaded p99 to the idle p99 (target: at most 2). Then the benchmark waits
   for the load to finish indexing (at most --timeout), so the next run starts idle.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.progress import Progress

from bench.corpus import corpus_docs, derive_queries, synthetic_corpus
from bench.ingest import PUBLISH_SLICE, publish_until_searchable
from bench.runtime import Stack, machine_info, open_stack
from bench.search import default_tenant, sample_texts
from bench.stats import rate, summarize
from core.adapters.triton_embedder import EmbedderUnavailable
from core.config import Settings
from core.domain import SearchQuery
from core.kafka_auth import kafka_client_options
from core.search import NoActiveModel, search
from schemas.topics import CONTENT_UPSERTED

# Load documents' ids start here, far beyond any search tenant's synthetic ids.
LOAD_ID_START = 5_000_000


@dataclass
class UnderIngestConfig:
    tenant: str | None = None
    corpus: Path | None = None
    n: int = 2000  # documents of the search tenant when it is empty
    load_n: int = 3000  # documents of the other tenant's bulk load
    queries: int = 100
    k: int = 10
    warmup: int = 10
    timeout_s: float = 600.0


def validate(config: UnderIngestConfig) -> None:
    if config.load_n < 1:
        raise ValueError("--load-n must be at least 1")
    if config.queries < 1:
        raise ValueError("--queries must be at least 1")


def ratio(loaded_p99: float, idle_p99: float) -> float | None:
    """Loaded over idle p99; None when the idle p99 is zero."""
    return round(loaded_p99 / idle_p99, 3) if idle_p99 > 0 else None


def load_tenant() -> str:
    return "bench-load-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S")


async def indexer_lag(settings: Settings) -> int:
    """Records of content-upserted the indexer's group has not committed yet, all partitions
    (the partitions read from a full metadata fetch: a consumer that never subscribes has none
    cached right after it starts)."""
    viewer = AIOKafkaConsumer(**kafka_client_options(settings), bootstrap_servers=settings.bootstrap_servers,
                              group_id=settings.indexer_group, enable_auto_commit=False)
    await viewer.start()
    try:
        cluster: Any = await viewer._client.fetch_all_metadata()
        partitions = [TopicPartition(CONTENT_UPSERTED.name, p)
                      for p in sorted(cluster.partitions_for_topic(CONTENT_UPSERTED.name) or ())]
        ends = await viewer.end_offsets(partitions)
        lag = 0
        for tp in partitions:
            lag += ends[tp] - (await viewer.committed(tp) or 0)
        return lag
    finally:
        await viewer.stop()


@dataclass
class Phase:
    took_ms: list[float] = field(default_factory=list)  # each whole search
    embed_ms: list[float] = field(default_factory=list)  # of which the query's embedding
    sql_ms: list[float] = field(default_factory=list)  # of which the store's queries
    failed: list[str] = field(default_factory=list)


async def timed_searches(stack: Stack, tenant: str, queries: Sequence[str], k: int,
                         progress: Progress, label: str) -> Phase:
    """Milliseconds of each search (and its parts), and the errors of those that failed: a search
    Triton did not answer within the query deadline counts with the time it took to fail (a
    lower bound)."""
    task = progress.add_task(label, total=len(queries))
    phase = Phase()
    for text in queries:
        began = time.perf_counter()
        try:
            store = stack.store.for_tenant(tenant)
            result = await search(SearchQuery(text, k, tenant), store, stack.embedder)
            phase.embed_ms.append(result.timings_ms["embed_ms"])
            phase.sql_ms.append(result.timings_ms["search_ms"])
        except EmbedderUnavailable as error:
            phase.failed.append(str(error))
        phase.took_ms.append((time.perf_counter() - began) * 1000)
        progress.advance(task)
    return phase


def phase_report(phase: Phase) -> dict[str, Any]:
    parts = {f"{name}_{key}": value for name, values in (("embed", phase.embed_ms), ("sql", phase.sql_ms))
             if values for key, value in _summary(values).items() if key in ("p50_ms", "p99_ms")}
    return {**_summary(phase.took_ms), "failed": len(phase.failed), **parts}


async def publish_load(stack: Stack, tenant: str, n: int, progress: Progress) -> float:
    """Publish the load as fast as Kafka acknowledges it; returns the seconds it took."""
    publisher = await stack.ensure_publisher()
    docs = synthetic_corpus(n, start=LOAD_ID_START)
    task = progress.add_task(f"publishing the load ({n})", total=n)
    began = time.perf_counter()
    for start in range(0, n, PUBLISH_SLICE):
        part = docs[start : start + PUBLISH_SLICE]
        await publisher.publish_many(CONTENT_UPSERTED, [doc.event(tenant) for doc in part])
        progress.advance(task, len(part))
    return time.perf_counter() - began


def _summary(values: list[float]) -> dict[str, Any]:
    summary = summarize(values)
    return {"p50_ms": round(summary.p50, 2), "p99_ms": round(summary.p99, 2),
            "mean_ms": round(summary.mean, 2), "max_ms": round(summary.max, 2)}


async def run_under_ingest(
    settings: Settings, config: UnderIngestConfig, progress: Progress
) -> dict[str, Any]:
    validate(config)
    tenant = config.tenant or default_tenant(config.corpus, config.n)
    machine = machine_info()  # before the run: its load average is the other work's
    async with open_stack(settings, ingest=True) as stack:
        with progress:
            if await stack.store.count_items(tenant) == 0:
                await publish_until_searchable(stack, corpus_docs(config.corpus, config.n), tenant, progress,
                                               config.timeout_s)
            if await stack.store.active_version(tenant) is None:
                raise NoActiveModel("no model version is active yet; index some content first")
            items = await stack.store.count_items(tenant)
            queries = derive_queries(await sample_texts(stack, tenant), config.queries)
            if config.warmup:
                await timed_searches(stack, tenant, (queries * config.warmup)[: config.warmup], config.k,
                                     progress, "warm-up")
            lag_idle = await indexer_lag(settings)
            idle = await timed_searches(stack, tenant, queries, config.k, progress, "idle searches")

            loaded_tenant = load_tenant()
            publish_s = await publish_load(stack, loaded_tenant, config.load_n, progress)
            lag_start = await indexer_lag(settings)
            indexed_start = await stack.store.count_items(loaded_tenant)
            began = time.perf_counter()
            loaded = await timed_searches(stack, tenant, queries, config.k, progress, "searches under ingest")
            phase_s = time.perf_counter() - began
            lag_end = await indexer_lag(settings)
            indexed_end = await stack.store.count_items(loaded_tenant)

            waiting = progress.add_task("waiting for the load to be indexed", total=config.load_n)
            deadline = time.perf_counter() + config.timeout_s
            indexed = indexed_end
            while indexed < config.load_n and time.perf_counter() < deadline:
                await asyncio.sleep(1)
                indexed = await stack.store.count_items(loaded_tenant)
                progress.update(waiting, completed=indexed)
    idle_summary, loaded_summary = phase_report(idle), phase_report(loaded)
    return {
        "bench": "search-under-ingest",
        "tenant": tenant,
        "items": items,
        "queries": len(queries),
        "k": config.k,
        "idle": idle_summary,
        "under_ingest": loaded_summary,
        "errors": sorted(set(idle.failed + loaded.failed))[:3],
        "ratio_p99_under_ingest_to_idle": ratio(loaded_summary["p99_ms"], idle_summary["p99_ms"]),
        "ratio_p50_under_ingest_to_idle": ratio(loaded_summary["p50_ms"], idle_summary["p50_ms"]),
        "target_ratio_p99": 2.0,
        "load": {
            "tenant": loaded_tenant,
            "documents": config.load_n,
            "publish_s": round(publish_s, 2),
            "indexer_lag_before_load": lag_idle,
            "indexer_lag_at_start": lag_start,
            "indexer_lag_at_end": lag_end,
            "indexed_at_start": indexed_start,
            "indexed_at_end": indexed_end,
            # Published documents of the load not yet searchable: the indexer's real backlog.
            "backlog_at_start": config.load_n - indexed_start,
            "backlog_at_end": config.load_n - indexed_end,
            "loaded_phase_s": round(phase_s, 2),
            "docs_per_s_during_phase": round(rate(indexed_end - indexed_start, phase_s), 2),
            "ingest_busy_throughout": indexed_end < config.load_n,
            "indexed_after_wait": indexed,
        },
        "machine": machine,
    }
