"""Metric history for the console's charts: a fixed set of Prometheus range queries.

`GET /v1/admin/metrics/history?window=1h` (operator scope: the series span tenants) asks the
Prometheus at `prometheus_url` for events/s per topic, lag per group and topic, searches/s and
dead letters/s over the window, and answers the series as JSON (`available: false` while
Prometheus cannot be reached). Only these queries run: nothing of the caller's reaches PromQL
but the window, chosen from a closed list.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any, Literal

import httpx
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from gateway.deps import Operator, SettingsDep

router = APIRouter(prefix="/v1/admin/metrics", tags=["admin"])

Window = Literal["15m", "1h", "6h", "24h", "7d"]
WINDOW_SECONDS = {"15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400}
POINTS = 120  # per series: the step is the window / POINTS
TIMEOUT_S = 10.0
# name -> PromQL, {rate} standing for the range of its rate()
QUERIES: dict[str, str] = {
    "events_per_s": "sum by (topic) (max by (topic, partition) (rate(flywheel_topic_end_offset[{rate}])))",
    "lag": "sum by (group, topic) (max by (group, topic, partition) (flywheel_consumer_lag))",
    "searches_per_s": "sum by (mode) (rate(flywheel_search_seconds_count[{rate}]))",
    "dead_letters_per_s": "sum by (topic) (rate(flywheel_dead_letters_total[{rate}]))",
}


class Series(BaseModel):
    labels: dict[str, str]
    points: list[tuple[float, float]] = Field(description="(unix seconds, value) pairs, oldest first.")


class MetricsHistory(BaseModel):
    window: Window
    step_s: int
    available: bool = Field(description="False while Prometheus cannot be reached; `detail` says why.")
    detail: str | None = None
    series: dict[str, list[Series]] = Field(description=f"One list per query: {', '.join(QUERIES)}.")


async def _range(client: httpx.AsyncClient, expr: str, start: float, end: float, step: int) -> list[Series]:
    response = await client.get("/api/v1/query_range",
                                params={"query": expr, "start": start, "end": end, "step": step})
    body = response.json()
    if response.status_code != 200 or body.get("status") != "success":
        raise ValueError(f"Prometheus refused a query: {body.get('error', response.status_code)}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return [Series(labels=r["metric"], points=[(float(t), float(v)) for t, v in r["values"]]) for r in result]


@router.get("/history", response_model=MetricsHistory)
async def metrics_history(
    who: Operator, settings: SettingsDep,
    window: Annotated[Window, Query(description="How far back: 15m, 1h, 6h, 24h or 7d.")] = "1h",
) -> MetricsHistory:
    """Events/s per topic, consumer lag per group and topic, searches/s and dead letters/s over
    `window`, from Prometheus's history. Operator scope. While Prometheus cannot be reached the
    answer says so (`available: false`, empty series): history is optional, the overview
    still shows the live figures."""
    seconds = WINDOW_SECONDS[window]
    step = max(seconds // POINTS, int(settings.prometheus_scrape_interval_s), 1)
    rate = f"{max(4 * int(settings.prometheus_scrape_interval_s), 2 * step)}s"
    end = time.time()
    try:
        async with httpx.AsyncClient(base_url=settings.prometheus_base_url, timeout=TIMEOUT_S) as client:
            results = await asyncio.gather(*(_range(client, expr.format(rate=rate), end - seconds, end, step)
                                             for expr in QUERIES.values()))
    except (httpx.HTTPError, ValueError) as error:
        return MetricsHistory(window=window, step_s=step, available=False,
                              detail=f"Prometheus at {settings.prometheus_base_url}: {error!r}",
                              series={name: [] for name in QUERIES})
    return MetricsHistory(window=window, step_s=step, available=True,
                          series=dict(zip(QUERIES, results, strict=True)))
