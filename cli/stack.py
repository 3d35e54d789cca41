"""`flywheel up`, `down` and `status`: the local stack."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from core.api_keys import ensure_local_admin_key
from core.config import get_settings
from infra import stack
from infra.process import Component, PrerequisiteMissing, StartupFailed

console = Console(stderr=True)
ComponentNames = Annotated[
    list[str] | None, typer.Argument(help="Only these components (default: all).", show_default=False)
]


def up(
    names: ComponentNames = None,
    scale: Annotated[list[str] | None, typer.Option(
        "--scale", metavar="SERVICE=N",
        help="Run N processes of a consumer service in its one consumer group (repeatable); "
             "kept until `flywheel down`. More than the topic's partitions leaves some idle.",
    )] = None,
) -> None:
    """Start every component and service in the background (idempotent) and return; a
    supervisor process restarts a service that crashes, with back-off."""
    settings = get_settings()
    began = time.monotonic()
    try:
        replicas = stack.parse_scale(scale or [])
    except ValueError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from error
    for warning in stack.scale_warnings(replicas):
        console.print(f"[yellow]warning:[/] {warning}")

    def report(component: Component) -> None:
        console.print(f"[green]ready[/] {component.name:<10} {component.url}")

    # The gateway reads the hashed keys when it starts.
    key = ensure_local_admin_key(settings.api_key_file, settings.api_key_store)
    try:
        with console.status("starting the stack..."):
            stack.up(settings, names, on_started=report, scale=replicas)
    except (PrerequisiteMissing, StartupFailed, ValueError) as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(1) from error
    console.print(
        f"\nStack up in {time.monotonic() - began:.0f}s. Gateway: {settings.gateway_url}/docs\n"
        f"Admin API key: {settings.api_key_file} ({key[:6]}...)\n"
        f"State and logs: {settings.state_dir}"
    )


def down(names: ComponentNames = None) -> None:
    """Stop what `up` started, by PID: the supervisor first, then the services, then the rest."""
    settings = get_settings()
    try:
        stack.down(settings, names)
    except ValueError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(1) from error
    console.print("stack stopped")


def status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Health of every component and service, and how often the supervisor restarted each
    service; exits 0 only when all are healthy."""
    rows = stack.status(get_settings())
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        table = Table("name", "healthy", "pid", "restarts", "url", "detail")
        for row in rows:
            mark = "[green]yes[/]" if row["healthy"] else "[red]no[/]"
            restarts = "-" if row.get("restarts") is None else str(row["restarts"])
            table.add_row(str(row["name"]), mark, str(row["pid"] or "-"), restarts, str(row["url"]),
                          str(row["detail"]))
        Console().print(table)
    if not all(row["healthy"] for row in rows):
        raise typer.Exit(1)
