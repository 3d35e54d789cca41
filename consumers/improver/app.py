"""The improver service: nudges stored item vectors by the clicks, between trainings.

Run: `uvicorn consumers.improver.app:app`. It always runs (so `make up` and probes treat every
service alike) but changes nothing unless `FLYWHEEL_IMPROVER_ENABLED=true`. When enabled, a
run (core.improver.improve_tenants: for each tenant with recent sessions, on that tenant's
active version, from its own sessions, moving only its own items) happens every
`improver_interval_s`, and also shortly after new clicks arrive on `clicks` (its own consumer
group `improver`; the records only wake it up: the clicks themselves are read from the session
documents the sessions service writes, so this subscriber has no effects to protect and needs
no error policy). Runs never overlap; a failed run (of one tenant) is logged and retried at the
next wake-up; the other tenants' runs go on.
Undo with `flywheel models improver-revert VERSION` (or DELETE /v1/models/{version}/adjustments).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from consumers.service import ConsumerService, ServiceContext, raw_message
from core.adapters.session_store import MongoSessionStore
from core.adapters.triton_embedder import TritonEmbedder
from core.adapters.vector_adjustments import PgVectorAdjustments
from core.bootstrap import build_embedder, build_session_store, build_store
from core.improver import improve_tenants, improver_config
from schemas.topics import CLICKS


@dataclass(frozen=True)
class Improver:
    adjustments: PgVectorAdjustments
    sessions: MongoSessionStore
    embedder: TritonEmbedder


async def open_resources(ctx: ServiceContext) -> Improver | None:
    if not ctx.settings.improver_enabled:
        ctx.log.info("improver disabled (FLYWHEEL_IMPROVER_ENABLED=false): nothing will be adjusted")
        return None
    store = ctx.closing(await build_store(ctx.settings))
    return Improver(PgVectorAdjustments(store.pool), ctx.closing(await build_session_store(ctx.settings)),
                    ctx.closing(build_embedder(ctx.settings)))


service = ConsumerService("improver", open_resources)
settings = service.settings
wakeup = asyncio.Event()


async def run_once(improver: Improver) -> None:
    reports = await improve_tenants(
        improver.adjustments, improver.sessions, improver.embedder, improver_config(settings)
    )
    for report in reports:
        service.log.info(
            "improver run: tenant %s version %s revision %d, %d clicks, %d items, committed=%s, metrics %s",
            report.tenant, report.version, report.revision, report.clicks, report.items, report.committed,
            report.metrics,
        )


async def loop() -> None:
    improver = service.resources
    if improver is None:
        return
    while True:
        woken = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wakeup.wait(), timeout=settings.improver_interval_s)
            woken = True
        if woken:  # let the sessions service fold the clicks that woke us
            await asyncio.sleep(settings.improver_settle_s + 1.0)
        wakeup.clear()
        try:
            await run_once(improver)
        except Exception:
            service.log.exception("improver run failed; retrying at the next wake-up")


@service.broker.subscriber(
    CLICKS.name, group_id="improver", batch=True, max_records=500, batch_timeout_ms=500,
    auto_offset_reset="latest", decoder=raw_message,
)
async def on_clicks(records: Any) -> None:
    if settings.improver_enabled:
        wakeup.set()


service.in_background(loop)
broker = service.broker
app = service.app()
