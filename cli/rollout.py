"""`flywheel models list|activate` and `flywheel reindex`: promote, roll back, rebuild an index."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.common import Bootstrap, JsonOutput, bootstrap_or_default, fail, out
from core.bootstrap import build_embedder, build_store
from core.config import get_settings
from core.domain import ConcurrentChange
from core.rollout import Activation, ActivationError, activate_version, reindex_task_id
from producers.publisher import Delivery, Publisher, PublisherError
from schemas.envelope import DEFAULT_TENANT
from schemas.reindex import ReindexRequested
from schemas.topics import REINDEX_REQUESTED

models_app = typer.Typer(help="Model versions: list them, promote or roll back.", no_args_is_help=True)


Tenant = Annotated[str, typer.Option("--tenant", help="Whose model lineage (default: the default tenant).")]


async def _versions(tenant: str) -> tuple[str | None, list[dict[str, Any]]]:
    store = await build_store(get_settings())
    try:
        return await store.active_version(tenant), await store.list_versions(tenant)
    finally:
        await store.close()


@models_app.command("list")
def list_models(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
                tenant: Tenant = DEFAULT_TENANT) -> None:
    """A tenant's model versions with an index, and which one its search uses."""
    active, rows = asyncio.run(_versions(tenant))
    if as_json:
        print(json.dumps({"tenant": tenant, "active_version": active, "versions": rows}, default=str,
                         indent=2))
        return
    table = Table("version", "status", "dim", "created", "activated", "reason",
                  title=f"active version: {active}")
    for row in rows:
        table.add_row(row["version"], row["status"], str(row["dim"]), str(row["created_at"])[:19],
                      str(row["activated_at"] or "")[:19], row.get("reason") or "")
    out.print(table)


@models_app.command("show")
def show_model(
    version: Annotated[str, typer.Argument(help="The model version.")],
    as_json: JsonOutput = False,
    tenant: Tenant = DEFAULT_TENANT,
) -> None:
    """One model version of a tenant: status, dimension, when created and activated, why it failed."""
    active, rows = asyncio.run(_versions(tenant))
    row = next((r for r in rows if r["version"] == version), None)
    if row is None:
        raise fail(f"no model version {version!r} with an index; versions: "
                   f"{', '.join(r['version'] for r in rows) or 'none'}", 1)
    row = {**row, "active": version == active}
    if as_json:
        print(json.dumps(row, default=str, indent=2))
        return
    for field, value in row.items():
        out.print(f"{field}: {'' if value is None else value}", highlight=False)


async def _activate(version: str, expected_active: str | None, tenant: str) -> Activation:
    settings = get_settings()
    store = await build_store(settings)
    embedder = build_embedder(settings)
    try:
        return await activate_version(store.for_tenant(tenant), version, is_served=embedder.ready,
                                      expected_active=expected_active)
    finally:
        await store.close()
        await embedder.close()


@models_app.command("activate")
def activate(
    version: Annotated[str, typer.Argument(help="The model version to serve search from.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    expect_active: Annotated[str | None, typer.Option(
        "--expect-active", help="Only if this version is still the active one (exit 1 otherwise).")] = None,
    tenant: Tenant = DEFAULT_TENANT,
) -> None:
    """Switch a tenant's search to VERSION at once (a promotion, or a rollback to a retired version)."""
    try:
        result = asyncio.run(_activate(version, expect_active, tenant))
    except (ActivationError, ConcurrentChange) as error:
        raise fail(str(error), 1) from error
    if as_json:
        print(json.dumps({"active_version": result.version, "previous_version": result.previous}))
    elif result.changed:
        out.print(f"model version [bold]{result.version}[/] is active (was {result.previous})")
    else:
        out.print(f"model version [bold]{result.version}[/] was already active")


async def _request_reindex(bootstrap: str, event: ReindexRequested) -> Delivery:
    async with Publisher(bootstrap, source="flywheel-cli") as publisher:
        return await publisher.publish(REINDEX_REQUESTED, event)


def reindex(
    version: Annotated[str, typer.Argument(help="The model version whose index to build.")],
    activate: Annotated[
        bool, typer.Option("--activate/--no-activate", help="Switch search to it once complete.")
    ] = True,
    from_offset: Annotated[int, typer.Option("--from-offset", min=0, help="Replay from this offset.")] = 0,
    bootstrap: Bootstrap = None,
    as_json: JsonOutput = False,
    tenant: Tenant = DEFAULT_TENANT,
) -> None:
    """Request a rebuild of VERSION's index of a tenant's items from content-upserted (the
    reindexer does it).

    The version must be served by Triton (deployed). A version whose reindex already
    succeeded is left as it is.
    """
    if not version.isdigit():
        raise fail(f"model versions are numeric, not {version!r}")
    event = ReindexRequested(model_version=version, activate=activate, from_offset=from_offset, tenant=tenant)
    task = reindex_task_id(version, tenant)
    try:
        delivery = asyncio.run(_request_reindex(bootstrap_or_default(bootstrap), event))
    except PublisherError as error:
        raise fail(str(error), 1) from error
    if as_json:
        print(json.dumps({"model_version": version, "event_id": str(event.event_id),
                          "partition": delivery.partition, "offset": delivery.offset,
                          "task_id": task}, indent=2))
        return
    out.print(f"reindex of version {version} requested (event {event.event_id}, "
              f"offset {delivery.offset}); follow it with task id {task}")
