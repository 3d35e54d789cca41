"""`flywheel bench gateway`: the REST API under concurrent load, beside the search function
called in-process on the same queries at the same concurrency."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from bench.corpus import derive_queries, synthetic_corpus
from bench.runtime import StackUnavailable, machine_info, open_stack, run_bounded
from bench.stats import rate, summarize
from core.config import Settings
from core.domain import SearchQuery
from core.search import search


@dataclass(frozen=True)
class GatewayConfig:
    requests: int = 300
    concurrency: int = 32
    k: int = 10
    api_key: str = ""
    tenant: str = "default"  # the API key's tenant: the in-process baseline searches the same items


@dataclass(frozen=True)
class LoadResult:
    seconds: float
    latencies_ms: list[float]
    errors: int

    def to_dict(self) -> dict[str, Any]:
        ok = len(self.latencies_ms)
        return {"requests": ok + self.errors, "errors": self.errors,
                "requests_per_s": round(rate(ok, self.seconds), 2),
                "latency_ms": summarize(self.latencies_ms).to_dict() if ok else None}


async def run_load(calls: Sequence[Callable[[], Awaitable[bool]]], concurrency: int) -> LoadResult:
    """Run every call with at most `concurrency` in flight; a call returns whether it succeeded."""
    latencies: list[float] = []
    errors = 0

    def timed(call: Callable[[], Awaitable[bool]]) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            nonlocal errors
            began = time.perf_counter()
            try:
                ok = await call()
            except (httpx.HTTPError, OSError):
                ok = False
            if ok:
                latencies.append((time.perf_counter() - began) * 1000)
            else:
                errors += 1
        return run

    began = time.perf_counter()
    await run_bounded([timed(call) for call in calls], concurrency)
    return LoadResult(time.perf_counter() - began, latencies, errors)


async def run_gateway(settings: Settings, config: GatewayConfig) -> dict[str, Any]:
    if not config.api_key:
        raise ValueError(
            f"no API key: pass --api-key or create one with `flywheel up` ({settings.api_key_file})")
    headers = {"Authorization": f"Bearer {config.api_key}"}
    queries = derive_queries([d.text for d in synthetic_corpus(200)], config.requests)
    run = uuid.uuid4().hex[:8]
    limits = httpx.Limits(max_connections=config.concurrency, max_keepalive_connections=config.concurrency)
    async with httpx.AsyncClient(base_url=settings.gateway_url, headers=headers, timeout=60,
                                 limits=limits) as client:
        try:
            probe = await client.get("/v1/models")
        except httpx.HTTPError as error:
            raise StackUnavailable(f"cannot reach the gateway at {settings.gateway_url}: {error}") from error
        if probe.status_code != 200:
            raise StackUnavailable(f"the gateway answered {probe.status_code}: {probe.text[:200]}")

        def search_call(query: str) -> Callable[[], Awaitable[bool]]:
            async def call() -> bool:
                response = await client.post("/v1/search", json={"query": query, "k": config.k})
                return response.status_code == 200
            return call

        def content_call(i: int) -> Callable[[], Awaitable[bool]]:
            async def call() -> bool:
                response = await client.post("/v1/content", json={
                    "id": f"bench-gw-{run}-{i}", "text": queries[i % len(queries)], "version": 1})
                return response.status_code == 202
            return call

        await run_load([search_call(q) for q in queries[:20]], config.concurrency)  # warm-up
        searched = await run_load([search_call(q) for q in queries], config.concurrency)
        published = await run_load([content_call(i) for i in range(config.requests)], config.concurrency)

    async with open_stack(settings, ingest=False) as stack:
        def in_process(query: str) -> Callable[[], Awaitable[bool]]:
            async def call() -> bool:
                await search(SearchQuery(query, config.k, config.tenant), stack.store, stack.embedder)
                return True
            return call

        baseline = await run_load([in_process(q) for q in queries], config.concurrency)

    report = {
        "concurrency": config.concurrency,
        "search": searched.to_dict(),
        "content": published.to_dict(),
        "search_in_process": baseline.to_dict(),
        "machine": machine_info(),
    }
    if searched.latencies_ms and baseline.latencies_ms:
        report["search_rps_ratio"] = round(
            rate(len(searched.latencies_ms), searched.seconds)
            / rate(len(baseline.latencies_ms), baseline.seconds), 3)
    return report
