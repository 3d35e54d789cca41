"""`flywheel bench search`: latency of the search function against the bare path, and recall@k
of the HNSW index against an exact scan, on the same queries in the same run.

- search function: core.search.search, exactly as the gateway and `flywheel search` call it
  (active version lookup, query embedding in Triton over gRPC, HNSW SQL, titles).
- bare path: the query embedded in-process by the same model, then the same vector_search
  and describe SQL: what the platform costs over calling the model and PostgreSQL directly.
- hybrid: the search function with mode=hybrid (adds the BM25 ranking and the fusion).
- recall@k: for each query (its Triton vector), the HNSW top-k items against the exact top-k
  of a sequential scan over the tenant's chunks.
- k-independence: for each query and mode, whether its top k at k are its top k at k=100
  (the share of queries where they are equal, in order). Untimed: the k=100 searches and the
  recall reuse the query vector of the timed search.
- with `qrels` (BEIR), nDCG@k of the k results of each judged query: vector, hybrid, and the
  BM25 ranking alone (the store's text_search, as hybrid fuses it).
Queries run one at a time (latency, not throughput), after a warm-up on every path.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.progress import Progress

from bench.beir import ndcg, read_qrels, read_queries
from bench.corpus import corpus_docs, derive_queries, load_queries
from bench.ingest import corpus_label, publish_until_searchable
from bench.runtime import LocalModel, Stack, load_local_model, machine_info, open_stack
from bench.stats import recall_at_k, summarize
from core.config import Settings
from core.domain import Embeddings, SearchQuery
from core.ports import Embedder, Lane
from core.search import NoActiveModel, search

QUERY_SAMPLE = 2000
# The k that the first results at k are compared with (the API's largest).
LARGE_K = 100


@dataclass
class SearchConfig:
    tenant: str | None = None
    corpus: Path | None = None
    n: int = 2000  # documents to ingest when the tenant is empty
    queries: int = 200
    queries_file: Path | None = None
    k: int = 10
    warmup: int = 20
    hybrid: bool = True
    timeout_s: float = 600.0
    threads: int | None = None  # torch threads of the in-process bare path
    qrels: Path | None = None  # BEIR judgements of the queries file's ids: nDCG@k


def default_tenant(corpus: Path | None, n: int) -> str:
    """One tenant per corpus and size, reused by later runs: `bench-search-<corpus>-<n>`."""
    name = "synthetic" if corpus is None else (corpus.stem if corpus.is_file() else corpus.name)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "corpus"
    return f"bench-search-{slug}-{n}"


async def sample_texts(stack: Stack, tenant: str, limit: int = QUERY_SAMPLE) -> list[str]:
    """A deterministic sample of the tenant's texts (ordered by a hash of the id)."""
    async with stack.store.pool.connection() as conn:
        rows = await (await conn.execute(
            "SELECT text FROM items WHERE tenant = %s ORDER BY md5(id) LIMIT %s", (tenant, limit)
        )).fetchall()
    return [row[0] for row in rows]


def _ms(began: float) -> float:
    return (time.perf_counter() - began) * 1000


class LastQueryEmbedder:
    """Triton's embedder that keeps the last text's vector: the untimed calls of a query (its
    k=100 searches, its recall) reuse the vector its timed search got from Triton."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.max_batch_size = embedder.max_batch_size
        self.last: tuple[tuple[str, ...], str, Embeddings] | None = None
        self.refresh = True  # ask Triton even for the last text (the timed calls)

    async def embed(self, texts: Sequence[str], model_version: str, *, lane: Lane = "bulk") -> Embeddings:
        key = (tuple(texts), model_version)
        if self.refresh or self.last is None or self.last[:2] != key:
            self.last = (*key, await self.embedder.embed(texts, model_version, lane=lane))
        return self.last[2]


class Paths:
    """One query through each measured path; returns milliseconds (and ids where needed)."""

    def __init__(self, stack: Stack, model: LocalModel, tenant: str, version: str, k: int) -> None:
        self.stack, self.model, self.tenant, self.version, self.k = stack, model, tenant, version, k
        self.reused = LastQueryEmbedder(stack.embedder)

    async def search_function(
        self, text: str, mode: str = "vector", k: int | None = None, reuse: bool = False
    ) -> tuple[float, dict[str, float], list[str]]:
        """Timed through Triton; with `reuse`, the query's vector from the last timed call."""
        self.reused.refresh = not reuse
        began = time.perf_counter()
        result = await search(
            SearchQuery(text, k or self.k, self.tenant, mode="hybrid" if mode == "hybrid" else "vector"),
            self.stack.store.for_tenant(self.tenant), self.reused,
        )
        return _ms(began), result.timings_ms, [hit.id for hit in result.hits]

    async def bare(self, text: str) -> tuple[float, float, list[str]]:
        store = self.stack.store
        began = time.perf_counter()
        vector = self.model.encode([text], 1)[0]
        embed_ms = _ms(began)
        ranked = await store.vector_search(self.version, self.tenant, vector, self.k, {})
        await store.describe(self.tenant, [item_id for item_id, _ in ranked])
        return _ms(began), embed_ms, [item_id for item_id, _ in ranked]

    async def recall(self, text: str) -> tuple[float, float]:
        """(recall@k of HNSW against the exact scan, exact scan milliseconds)."""
        store = self.stack.store
        self.reused.refresh = False
        vector = (await self.reused.embed([text], self.version, lane="query")).vectors[0]
        approx = await store.vector_search(self.version, self.tenant, vector, self.k, {})
        began = time.perf_counter()
        exact = await store.exact_search(self.version, self.tenant, vector, self.k)
        exact_ms = _ms(began)
        return recall_at_k([i for i, _ in approx], [i for i, _ in exact], self.k), exact_ms


def _summary(values: list[float]) -> dict[str, Any]:
    summary = summarize(values)
    return {
        "p50_ms": round(summary.p50, 2), "p99_ms": round(summary.p99, 2), "mean_ms": round(summary.mean, 2),
        "min_ms": round(summary.min, 2), "max_ms": round(summary.max, 2),
    }


async def run_search(settings: Settings, config: SearchConfig, progress: Progress) -> dict[str, Any]:
    tenant = config.tenant or default_tenant(config.corpus, config.n)
    machine = machine_info()  # before the run: its load average is the other work's
    async with open_stack(settings, ingest=False) as stack:
        with progress:
            items = await stack.store.count_items(tenant)
            ingested = None
            # A named tenant is searched as it is; the default one is filled up to --n first.
            if items == 0 or (config.tenant is None and items < config.n):
                docs = corpus_docs(config.corpus, config.n)
                ingested = (await publish_until_searchable(
                    stack, docs, tenant, progress, config.timeout_s)).to_dict()
                items = await stack.store.count_items(tenant)
            version = await stack.store.active_version(tenant)
            if version is None:
                raise NoActiveModel("no model version is active yet; index some content first")

            judgements: list[dict[str, int]] = []
            if config.qrels is not None:
                if config.queries_file is None:
                    raise ValueError("--qrels needs --queries-file (the BEIR queries.jsonl of its ids)")
                path = config.queries_file
                texts = read_queries(path / "queries.jsonl" if path.is_dir() else path)
                judged = [(texts[q], j) for q, j in read_qrels(config.qrels).items() if q in texts]
                queries = [text for text, _ in judged[: config.queries]]
                judgements = [j for _, j in judged[: config.queries]]
                source = f"{config.queries_file}, the queries judged in {config.qrels}"
            elif config.queries_file is not None:
                queries = load_queries(config.queries_file, config.queries)
                source = str(config.queries_file)
            else:
                queries = derive_queries(await sample_texts(stack, tenant), config.queries)
                source = f"derived from {tenant}'s items (8 words of a random sentence)"

            loading = progress.add_task("loading the in-process model", total=None)
            model = await asyncio.to_thread(load_local_model, settings, version, config.threads)
            progress.update(loading, total=1, completed=1)
            paths = Paths(stack, model, tenant, version, config.k)

            warm = progress.add_task("warm-up", total=config.warmup)
            for text in (queries * (config.warmup // len(queries) + 1))[: config.warmup]:
                await paths.search_function(text)
                await paths.bare(text)
                if config.hybrid:
                    await paths.search_function(text, "hybrid")
                await paths.recall(text)
                progress.advance(warm)

            function_ms: list[float] = []
            function_embed_ms: list[float] = []
            function_sql_ms: list[float] = []
            bare_ms: list[float] = []
            bare_embed_ms: list[float] = []
            hybrid_ms: list[float] = []
            exact_ms: list[float] = []
            recalls: list[float] = []
            agreement: list[float] = []
            # Per mode: whether the top k at k equal the top k at LARGE_K; nDCG@k when judged.
            same: dict[str, list[bool]] = {"vector": [], "hybrid": []}
            gains: dict[str, list[float]] = {"vector": [], "hybrid": [], "bm25": []}
            task = progress.add_task(f"{len(queries)} queries", total=len(queries))
            for number, text in enumerate(queries):
                took, timings, function_ids = await paths.search_function(text)
                large = (await paths.search_function(text, k=LARGE_K, reuse=True))[2]
                same["vector"].append(function_ids == large[: config.k])
                function_ms.append(took)
                function_embed_ms.append(timings.get("embed_ms", 0.0))
                function_sql_ms.append(timings.get("search_ms", 0.0))
                took, embed_ms, bare_ids = await paths.bare(text)
                bare_ms.append(took)
                bare_embed_ms.append(embed_ms)
                agreement.append(recall_at_k(bare_ids, function_ids, config.k))
                if config.hybrid:
                    took, _, hybrid_ids = await paths.search_function(text, "hybrid")
                    hybrid_ms.append(took)
                    large = (await paths.search_function(text, "hybrid", k=LARGE_K, reuse=True))[2]
                    same["hybrid"].append(hybrid_ids == large[: config.k])
                    if judgements:
                        gains["hybrid"].append(ndcg(hybrid_ids, judgements[number], config.k))
                if judgements:
                    gains["vector"].append(ndcg(function_ids, judgements[number], config.k))
                    lexical = await stack.store.text_search(tenant, text, config.k, {})
                    gains["bm25"].append(ndcg([item for item, _ in lexical], judgements[number], config.k))
                recall, exact = await paths.recall(text)
                recalls.append(recall)
                exact_ms.append(exact)
                progress.advance(task)

    function = _summary(function_ms)
    bare = _summary(bare_ms)
    function["embed_p50_ms"] = round(summarize(function_embed_ms).p50, 2)
    function["sql_p50_ms"] = round(summarize(function_sql_ms).p50, 2)
    bare["embed_p50_ms"] = round(summarize(bare_embed_ms).p50, 2)
    bare["sql_p50_ms"] = round(summarize([t - e for t, e in zip(bare_ms, bare_embed_ms, strict=True)]).p50, 2)
    return {
        "bench": "search",
        "tenant": tenant,
        "items": items,
        "ingested": ingested,
        "corpus": corpus_label(config.corpus) if ingested else None,
        "queries": len(queries),
        "queries_source": source,
        "warmup": config.warmup,
        "k": config.k,
        "model_version": version,
        "search_function": function,
        "bare": bare,
        "ratio_p50_function_to_bare": (
            round(function["p50_ms"] / bare["p50_ms"], 3) if bare["p50_ms"] else None
        ),
        "hybrid": _summary(hybrid_ms) if hybrid_ms else None,
        "exact_scan": _summary(exact_ms),
        f"recall_at_{config.k}": round(sum(recalls) / len(recalls), 4),
        "min_recall": round(min(recalls), 4),
        f"agreement_at_{config.k}": round(sum(agreement) / len(agreement), 4),
        # The share of queries whose top k at k are their top k at k=LARGE_K, in order.
        "k_independence": {"large_k": LARGE_K, **{
            mode: round(sum(flags) / len(flags), 4) for mode, flags in same.items() if flags}},
        f"ndcg_at_{config.k}": {mode: round(sum(values) / len(values), 5)
                                 for mode, values in gains.items() if values} or None,
        "baseline_device": model.device,
        "baseline_torch_threads": model.threads,
        "machine": machine,
    }
