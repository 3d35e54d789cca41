"""`flywheel models ab-split`, `improve` and `improver-revert`: A/B traffic and the improver."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from typing import Annotated, Any

import typer

from cli.common import fail, out
from core.ab import InvalidSplit, configure_split
from core.adapters.ab_split_store import PgSplitStore
from core.adapters.vector_adjustments import PgVectorAdjustments
from core.bootstrap import build_embedder, build_session_store, build_store
from core.config import get_settings
from core.domain import ConcurrentChange
from core.improver import improve_tenants, improver_config
from schemas.envelope import DEFAULT_TENANT

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


async def _split(version: str | None, percent: float | None, clear: bool, tenant: str
                 ) -> dict[str, Any] | None:
    store = await build_store(get_settings())
    try:
        splits = PgSplitStore(store.pool).for_tenant(tenant)
        if clear:
            await splits.clear_split()
            return None
        if version is not None and percent is not None:
            return asdict(await configure_split(splits, store.for_tenant(tenant), version, percent))
        split = await splits.get_split()
        return asdict(split) if split else None
    finally:
        await store.close()


def ab_split(
    version: Annotated[str | None, typer.Argument(help="The candidate version (complete index).")] = None,
    percent: Annotated[float | None, typer.Argument(min=0.0, max=100.0, help="Share of sessions, %.")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="End the split: all traffic to active.")] = False,
    as_json: AsJson = False,
    tenant: Annotated[str, typer.Option("--tenant", help="Whose split (default: the default tenant).")]
        = DEFAULT_TENANT,
) -> None:
    """Split a tenant's search sessions between its active version and VERSION (PERCENT % of sessions, by a
    hash of the session id). Without arguments, show the split; `--clear` ends it."""
    if (version is None) != (percent is None):
        raise fail("give both VERSION and PERCENT, or neither")
    try:
        split = asyncio.run(_split(version, percent, clear, tenant))
    except (InvalidSplit, ConcurrentChange) as error:
        raise fail(str(error)) from error
    if as_json:
        print(json.dumps({"ab_split": split}, default=str))
    elif split is None:
        out.print("no A/B split: the active version serves all searches")
    else:
        out.print(f"version {split['candidate_version']} serves {split['percent']:g}% of sessions")


async def _improve(tenant: str | None) -> list[dict[str, Any]]:
    settings = get_settings()
    store = await build_store(settings)
    sessions = await build_session_store(settings)
    embedder = build_embedder(settings)
    try:
        only = None if tenant is None else [tenant]
        reports = await improve_tenants(PgVectorAdjustments(store.pool), sessions, embedder,
                                        improver_config(settings), tenants=only)
        return [asdict(report) for report in reports]
    finally:
        await embedder.close()
        await sessions.close()
        await store.close()


def improve_now(
    as_json: AsJson = False,
    tenant: Annotated[str | None, typer.Option(
        "--tenant", help="Only this tenant (default: every tenant with recent sessions).")] = None,
) -> None:
    """Run the improver once now (also when the service is disabled): for each tenant with sessions
    in the evaluation window, on that tenant's active version, from its own sessions."""
    reports = asyncio.run(_improve(tenant))
    if as_json:
        print(json.dumps({"runs": reports}, default=str))
        return
    if not reports:
        out.print("no tenant with recent sessions: nothing to adjust")
    for report in reports:
        out.print(f"tenant {report['tenant']}, version {report['version']}: revision {report['revision']}, "
                  f"{report['clicks']} clicks, {report['items']} items adjusted; metrics {report['metrics']}")


async def _revert(version: str, tenant: str | None) -> tuple[int, int]:
    store = await build_store(get_settings())
    try:
        if version not in await store.dimensions():
            raise LookupError(f"model version {version!r} has no index")
        adjustments = PgVectorAdjustments(store.pool)
        restored = await adjustments.revert(version, tenant)
        return restored, (await adjustments.improver_state(version, tenant or DEFAULT_TENANT)).revision
    finally:
        await store.close()


def improver_revert(
    version: Annotated[str, typer.Argument(help="The model version whose adjustments to undo.")],
    as_json: AsJson = False,
    tenant: Annotated[str | None, typer.Option(
        "--tenant", help="Only this tenant's items (default: every tenant's).")] = None,
) -> None:
    """Restore the original vectors of every chunk the improver adjusted in VERSION (of every tenant,
    or of `--tenant`'s items only). The revision shown is that tenant's (default: the default tenant's)."""
    try:
        restored, revision = asyncio.run(_revert(version, tenant))
    except LookupError as error:
        raise fail(str(error)) from error
    if as_json:
        print(json.dumps({"version": version, "restored_chunks": restored, "revision": revision}))
    else:
        out.print(f"version {version}: {restored} chunks restored (revision {revision})")
