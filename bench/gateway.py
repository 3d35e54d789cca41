"""`flywheel bench gateway`: the REST API under concurrent load, beside the search function
called in-process on the same queries at the same concurrency."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.progress import Progress

from bench.corpus import derive_queries, synthetic_corpus
from bench.progress import make_progress
from bench.runtime import StackUnavailable, machine_info, open_stack, run_bounded
from bench.stats import rate, summarize
from core.config import Settings
from core.domain import SearchQuery
from core.search import search

WARMUP = 20


@dataclass(frozen=True)
class GatewayConfig:
    requests: int = 300
    concurrency: int = 32
    k: int = 10
    api_key: str = ""
    tenant: str = "default"  # the API key's tenant: the in-process baseline searches the same items
    timeout_s: float = 60.0  # per HTTP request


# A call returns None when it succeeded, else what went wrong: the HTTP status ("429") or the
# exception's name ("ReadTimeout").
Outcome = str | None
Call = Callable[[], Awaitable[Outcome]]


def expect(response: httpx.Response, status: int) -> Outcome:
    return None if response.status_code == status else str(response.status_code)


@dataclass(frozen=True)
class LoadResult:
    seconds: float
    latencies_ms: list[float]
    errors_by_status: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return sum(self.errors_by_status.values())

    def to_dict(self) -> dict[str, Any]:
        ok = len(self.latencies_ms)
        return {"requests": ok + self.errors, "errors": self.errors,
                "errors_by_status": dict(sorted(self.errors_by_status.items())),
                "requests_per_s": round(rate(ok, self.seconds), 2),
                "latency_ms": summarize(self.latencies_ms).to_dict() if ok else None}


async def run_load(
    calls: Sequence[Call], concurrency: int, advance: Callable[[], None] | None = None,
) -> LoadResult:
    """Run every call with at most `concurrency` in flight; latencies of those that succeeded,
    the others counted by what went wrong."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()

    def timed(call: Call) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            began = time.perf_counter()
            try:
                outcome = await call()
            except (httpx.HTTPError, OSError) as error:
                outcome = type(error).__name__
            if outcome is None:
                latencies.append((time.perf_counter() - began) * 1000)
            else:
                errors[outcome] += 1
            if advance:
                advance()
        return run

    began = time.perf_counter()
    await run_bounded([timed(call) for call in calls], concurrency)
    return LoadResult(time.perf_counter() - began, latencies, dict(errors))


async def probe_key(client: httpx.AsyncClient, gateway_url: str, path: str = "/v1/models",
                    wait_s: float = 5.0) -> None:
    """Check the gateway answers the key; a key just written to the key store is picked up by
    the gateway within about a second, so a 401 is retried for a few seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            probe = await client.get(path)
        except httpx.HTTPError as error:
            raise StackUnavailable(f"cannot reach the gateway at {gateway_url}: {error}") from error
        if probe.status_code == 200:
            return
        if probe.status_code != 401 or time.monotonic() > deadline:
            raise StackUnavailable(f"the gateway answered {probe.status_code}: {probe.text[:200]}")
        await asyncio.sleep(0.25)


async def run_gateway(
    settings: Settings, config: GatewayConfig, progress: Progress | None = None,
) -> dict[str, Any]:
    if not config.api_key:
        raise ValueError(
            f"no API key: pass --api-key or create one with `flywheel up` ({settings.api_key_file})")
    headers = {"Authorization": f"Bearer {config.api_key}"}
    queries = derive_queries([d.text for d in synthetic_corpus(200)], config.requests)
    run = uuid.uuid4().hex[:8]
    limits = httpx.Limits(max_connections=config.concurrency, max_keepalive_connections=config.concurrency)
    bars = progress or make_progress(False)
    with bars:
        async with httpx.AsyncClient(base_url=settings.gateway_url, headers=headers, timeout=config.timeout_s,
                                     limits=limits) as client:
            await probe_key(client, settings.gateway_url)

            def search_call(query: str) -> Call:
                async def call() -> Outcome:
                    return expect(await client.post("/v1/search", json={"query": query, "k": config.k}), 200)
                return call

            def content_call(i: int) -> Call:
                async def call() -> Outcome:
                    response = await client.post("/v1/content", json={
                        "id": f"bench-gw-{run}-{i}", "text": queries[i % len(queries)], "version": 1})
                    return expect(response, 202)
                return call

            await run_load([search_call(q) for q in queries[:WARMUP]], config.concurrency)
            searched = await run_load([search_call(q) for q in queries], config.concurrency,
                                      advance_bar(bars, "/v1/search", len(queries)))
            published = await run_load([content_call(i) for i in range(config.requests)], config.concurrency,
                                       advance_bar(bars, "/v1/content", config.requests))

        async with open_stack(settings, ingest=False) as stack:
            def in_process(query: str) -> Call:
                async def call() -> Outcome:
                    await search(SearchQuery(query, config.k, config.tenant),
                                 stack.store.for_tenant(config.tenant), stack.embedder)
                    return None
                return call

            baseline = await run_load([in_process(q) for q in queries], config.concurrency,
                                      advance_bar(bars, "in-process search", len(queries)))

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


def advance_bar(progress: Progress, name: str, total: int) -> Callable[[], None]:
    task = progress.add_task(name, total=total)
    return lambda: progress.advance(task)


def requests_of_a_run(config: GatewayConfig) -> int:
    """Every request a run sends with its key: what the key's burst must cover so that the rate
    limit never refuses the benchmark."""
    return WARMUP + 2 * config.requests + 1
