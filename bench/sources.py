"""`flywheel bench sources`: how fast a captured table's changes become searchable.

Against the running stack (Kafka Connect, the sources and indexer services, Triton, pgvector):

1. A table in a database of the stack's PostgreSQL (its own, dropped at the end) is registered
   as a source while empty, so what follows is the streaming path, not the snapshot.
2. Bulk: N rows inserted in one statement; the clock runs from its commit until all N items are
   in pgvector (items and chunk vectors are written in one transaction, so a counted item is
   searchable). Baseline, in the same run: the same N rows published directly to
   content-upserted with the SDK, timed the same way; the ratio is the cost of capture.
3. Freshness: M single-row UPDATEs at a steady rate, each writing a marker into the row's text;
   each latency runs from the UPDATE's commit to the first poll that finds the marker indexed
   (an upper bound, late by at most one poll interval).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from rich.progress import Progress

from bench.runtime import Stack, machine_info, open_stack
from bench.stats import rate, summarize
from core.bootstrap import build_source_admin
from core.config import Settings
from core.sources import SourceSpec
from schemas.topics import CONTENT_UPSERTED

DATABASE = "flywheel_bench_sources"


class SourcesTimeout(RuntimeError):
    """The changes did not all become searchable in time."""


@dataclass
class SourcesConfig:
    rows: int = 5000
    updates: int = 100
    rate: float = 5.0  # updates per second
    timeout_s: float = 900.0
    poll_interval_s: float = 0.05


def _text(i: int, marker: str = "") -> str:
    return f"Row {i} of the benchmark table, describing item {i} in a sentence or two. {marker}".strip()


def _execute(dsn: str, statement: str, params: Any = None) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement, params)


def _admin_dsn(settings: Settings, database: str) -> str:
    return settings.postgres_dsn.rsplit("/", 1)[0] + f"/{database}"


async def _until(check: Any, timeout_s: float, what: str, every_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise SourcesTimeout(f"{what} not searchable within {timeout_s:.0f} s")
        await asyncio.sleep(every_s)
    return time.perf_counter()


async def _indexed_text(stack: Stack, tenant: str, item_id: str) -> str:
    async with stack.store.pool.connection() as conn:
        row = await (await conn.execute(
            "SELECT text FROM items WHERE tenant = %s AND id = %s", (tenant, item_id))).fetchone()
    return "" if row is None else str(row[0])


async def run_sources(
    settings: Settings, config: SourcesConfig, progress: Progress | None = None
) -> dict[str, Any]:
    async with open_stack(settings, ingest=True) as stack:
        publisher = await stack.ensure_publisher()
        dsn = _admin_dsn(settings, DATABASE)
        _execute(_admin_dsn(settings, "postgres"), f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        _execute(_admin_dsn(settings, "postgres"), f"CREATE DATABASE {DATABASE}")
        _execute(dsn, "CREATE TABLE bench (id int PRIMARY KEY, body text NOT NULL)")
        name = f"bench_{uuid.uuid4().hex[:8]}"
        tenant = f"bench-sources-{uuid.uuid4().hex[:8]}"

        async def delete_items(tenant: str, ids: list[str]) -> int:
            for item_id in ids:
                await publisher.delete_content(item_id, tenant)
            return len(ids)

        admin = build_source_admin(settings, delete_items)
        try:
            if progress is not None:
                progress.start()
            await admin.add(SourceSpec(name=name, tenant=tenant, dsn=dsn, table="public.bench",
                                       id_column="id", text_columns=["body"]))
            return await _measure(stack, config, dsn, tenant, progress)
        finally:
            if progress is not None:
                progress.stop()
            await admin.remove(name, delete_items=True)
            await admin.close()
            _execute(_admin_dsn(settings, "postgres"), f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


async def _measure(
    stack: Stack, config: SourcesConfig, dsn: str, tenant: str, progress: Progress | None
) -> dict[str, Any]:
    n, every = config.rows, config.poll_interval_s

    async def count_is(who: str, wanted: int) -> bool:
        return await stack.store.count_items(who) == wanted

    # Bulk through capture.
    task = progress.add_task("bulk insert -> searchable", total=1) if progress else None
    _execute(dsn, "INSERT INTO bench SELECT i, 'Row ' || i || ' of the benchmark table, describing item ' "
                  "|| i || ' in a sentence or two.' FROM generate_series(1, %s) AS i", (n,))
    began = time.perf_counter()
    done = await _until(lambda: count_is(tenant, n), config.timeout_s, f"{n} inserted rows", every)
    captured_s = done - began
    if progress and task is not None:
        progress.update(task, completed=1)

    # Baseline: the same documents published directly.
    direct = f"{tenant}-direct"
    began = time.perf_counter()
    await stack.publisher.publish_many(CONTENT_UPSERTED, [  # type: ignore[union-attr]
        {"id": str(i), "text": _text(i), "version": 1, "tenant": direct} for i in range(1, n + 1)])
    done = await _until(lambda: count_is(direct, n), config.timeout_s, f"{n} published documents", every)
    direct_s = done - began

    # Freshness of single updates at a steady rate.
    latencies: list[float] = []
    task = progress.add_task("updates -> searchable", total=config.updates) if progress else None

    async def one(i: int) -> None:
        marker = f"marker-{uuid.uuid4().hex[:10]}"
        item = str(1 + i % n)
        await asyncio.to_thread(_execute, dsn, "UPDATE bench SET body = %s WHERE id = %s",
                                (_text(int(item), marker), int(item)))
        sent = time.perf_counter()

        async def seen() -> bool:
            return marker in await _indexed_text(stack, tenant, item)

        latencies.append((await _until(seen, 120, f"update of row {item}", every) - sent) * 1000)
        if progress and task is not None:
            progress.advance(task)

    pending: list[asyncio.Task[None]] = []
    for i in range(config.updates):
        pending.append(asyncio.create_task(one(i)))
        await asyncio.sleep(1 / config.rate)
    await asyncio.gather(*pending)
    publisher = stack.publisher
    assert publisher is not None
    await asyncio.gather(*(publisher.delete_content(str(i), direct) for i in range(1, n + 1)))

    captured, published = rate(n, captured_s), rate(n, direct_s)
    return {
        "rows": n,
        "capture": {"seconds": round(captured_s, 2), "rows_per_s": round(captured, 1)},
        "direct_publish": {"seconds": round(direct_s, 2), "docs_per_s": round(published, 1)},
        "ratio_capture_to_direct": round(captured / published, 3) if published else None,
        "update_to_searchable_ms": summarize(latencies).to_dict(),
        "update_rate_per_s": config.rate,
        "machine": machine_info(),
    }
