"""The improver service: nudges stored item vectors by the clicks, between trainings.

Run: `uvicorn consumers.improver.app:app`. It always runs (so `make up` and probes treat every
service alike) but changes nothing unless `FLYWHEEL_IMPROVER_ENABLED=true`. When enabled, a
run (core.improver.improve) happens every `improver_interval_s`, and also shortly after new
clicks arrive on `clicks` (its own consumer group `improver`; the records only wake it up:
the clicks themselves are read from the session documents the sessions service writes).
Runs never overlap; a failed run is logged and retried at the next wake-up.
Undo with `flywheel models improver-revert VERSION` (or DELETE /v1/models/{version}/adjustments).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from consumers.service import create_app, create_broker, raw_message
from core.adapters.session_store import MongoSessionStore
from core.adapters.vector_adjustments import PgVectorAdjustments
from core.bootstrap import build_embedder, build_session_store, build_store
from core.config import get_settings
from core.improver import improve, improver_config
from schemas.topics import CLICKS

log = logging.getLogger("flywheel.improver")
settings = get_settings()
broker, registry = create_broker("improver", settings)

deps: dict[str, Any] = {}
wakeup = asyncio.Event()


async def run_once() -> None:
    adjustments: PgVectorAdjustments = deps["adjustments"]
    sessions: MongoSessionStore = deps["sessions"]
    report = await improve(adjustments, sessions, deps["embedder"], improver_config(settings))
    log.info("improver run: version %s revision %d, %d clicks, %d items, committed=%s, metrics %s",
             report.version, report.revision, report.clicks, report.items, report.committed, report.metrics)


async def loop() -> None:
    while True:
        woken = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wakeup.wait(), timeout=settings.improver_interval_s)
            woken = True
        if woken:  # let the sessions service fold the clicks that woke us
            await asyncio.sleep(settings.improver_settle_s + 1.0)
        wakeup.clear()
        try:
            await run_once()
        except Exception:
            log.exception("improver run failed; retrying at the next wake-up")


async def open_dependencies() -> None:
    if not settings.improver_enabled:
        log.info("improver disabled (FLYWHEEL_IMPROVER_ENABLED=false): nothing will be adjusted")
        return
    store = await build_store(settings)
    deps["store"] = store
    deps["adjustments"] = PgVectorAdjustments(store.pool)
    deps["sessions"] = await build_session_store(settings)
    deps["embedder"] = build_embedder(settings)
    deps["loop"] = asyncio.create_task(loop())


async def close_dependencies() -> None:
    task = deps.pop("loop", None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for name in ("embedder", "sessions", "store"):
        if name in deps:
            await deps.pop(name).close()


@broker.subscriber(
    CLICKS.name, group_id="improver", batch=True, max_records=500, batch_timeout_ms=500,
    auto_offset_reset="latest", decoder=raw_message,
)
async def on_clicks(records: Any) -> None:
    if settings.improver_enabled:
        wakeup.set()


app = create_app("improver", broker, registry)
app.on_startup(open_dependencies)
app.after_shutdown(close_dependencies)
