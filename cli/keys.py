"""`flywheel keys`: the gateway's API keys, each bound to one tenant and a set of scopes.
Kept hashed in the stack's key store; a running gateway picks up changes within a second."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from cli.common import JsonOutput, fail, out
from core.api_keys import SCOPES, create_key, load_keys, revoke_key
from core.config import get_settings

app = typer.Typer(help="API keys of the gateway: create, list, show, revoke.", no_args_is_help=True)


@app.command("create")
def create(
    key_id: Annotated[str, typer.Argument(help="A name for the key (replaces a key of the same name).")],
    tenant: Annotated[str, typer.Option(
        "--tenant", help="The only tenant the key can read and write: letters, digits, '.', '_', '-'.")],
    scopes: Annotated[
        str, typer.Option("--scopes", help=f"Comma-separated, of: {', '.join(SCOPES)}.")
    ] = "publish,search",
    rate: Annotated[
        float | None, typer.Option("--rate", help="Requests/s, more than 0 (default: the gateway's). "
                                   "To block a key, revoke it.")
    ] = None,
    burst: Annotated[int | None, typer.Option("--burst", help="Burst size, at least 1.")] = None,
    as_json: JsonOutput = False,
) -> None:
    """Create a key and print it: this is the only time it is shown.

    Scopes: search; publish (content and clicks); admin (the tenant's training, rollouts,
    splits, tasks and dead letters; includes search and publish); operator (across tenants:
    component status, topic lag, every tenant's counts and dead letters; includes admin)."""
    settings = get_settings()
    try:
        key = create_key(settings.api_key_store, key_id, tenant,
                         [s.strip() for s in scopes.split(",") if s.strip()], rate, burst)
    except ValueError as error:
        raise fail(str(error), 2) from error
    if as_json:
        record = next(r for r in load_keys(settings.api_key_store) if r.key_id == key_id)
        print(json.dumps({**record.model_dump(exclude={"key_sha256"}), "key": key}, indent=2))
        return
    print(key)


@app.command("list")
def list_keys(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """The keys in the store (their hashes are not shown)."""
    records = load_keys(get_settings().api_key_store)
    if as_json:
        print(json.dumps([r.model_dump(exclude={"key_sha256"}) for r in records], indent=2))
        return
    table = Table("key id", "tenant", "scopes", "rate/s", "burst")
    for r in records:
        table.add_row(r.key_id, r.tenant, ",".join(r.scopes), str(r.rate_per_s or "default"),
                      str(r.burst or "default"))
    out.print(table)


@app.command("show")
def show(key_id: Annotated[str, typer.Argument(help="The key's name.")], as_json: JsonOutput = False) -> None:
    """One key: tenant, scopes, rate and burst (never the key or its hash)."""
    record = next((r for r in load_keys(get_settings().api_key_store) if r.key_id == key_id), None)
    if record is None:
        raise fail(f"no key named {key_id!r}", 1)
    shown = record.model_dump(exclude={"key_sha256"})
    if as_json:
        print(json.dumps(shown, indent=2))
        return
    for field, value in shown.items():
        out.print(f"{field}: {','.join(value) if isinstance(value, list) else value}", highlight=False)


@app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's name.")], as_json: JsonOutput = False
) -> None:
    """Remove a key; the gateway refuses it from then on."""
    if not revoke_key(get_settings().api_key_store, key_id):
        raise fail(f"no key named {key_id!r}", 1)
    if as_json:
        print(json.dumps({"revoked": key_id}))
        return
    out.print(f"revoked {key_id}")
