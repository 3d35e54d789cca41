"""`flywheel sources`: other systems' database tables captured by Debezium into content.

An operator's command: it talks to Kafka Connect, the platform's PostgreSQL and Kafka with the
stack's own settings (tenants manage their own sources through /v1/sources)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.table import Table

from cli.common import fail, out
from core.bootstrap import build_source_admin
from core.config import get_settings
from core.ports import DependencyUnavailable
from core.source_admin import SourceAdmin, SourceExists, UnknownSource
from core.sources import SourceError, SourceSpec
from producers.publisher import Publisher, PublisherError

app = typer.Typer(help="Sources: database tables whose rows become content (Debezium CDC).",
                  no_args_is_help=True)
T = TypeVar("T")
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _columns(value: str | None) -> list[str]:
    return [c.strip() for c in (value or "").split(",") if c.strip()]


async def _delete_items(tenant: str, ids: list[str]) -> int:
    async with Publisher(get_settings().bootstrap_servers, source="flywheel-sources") as publisher:
        for item_id in ids:
            await publisher.delete_content(item_id, tenant)
    return len(ids)


def _run(work: Callable[[SourceAdmin], Awaitable[T]]) -> T:
    async def main() -> T:
        admin = build_source_admin(get_settings(), _delete_items)
        try:
            return await work(admin)
        finally:
            await admin.close()

    try:
        return asyncio.run(main())
    except (SourceError, SourceExists) as error:
        raise fail(str(error), 2) from error
    except UnknownSource as error:
        raise fail(str(error.args[0]), 1) from error
    except (DependencyUnavailable, PublisherError, OSError) as error:
        raise fail(f"{error} (is the stack up? `flywheel status`)", 1) from error


def _print(source: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(source, indent=2, default=str))
        return
    for key in ("name", "tenant", "kind", "dsn", "table", "id_column", "title_column", "text_columns",
                "text_template", "metadata_columns", "version_column", "topic", "connector"):
        out.print(f"[bold]{key}[/]: {source.get(key)}", highlight=False)


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Lowercase letters, digits and _.")],
    dsn: Annotated[str, typer.Option("--dsn", help="postgresql://user:password@host:port/database")],
    table: Annotated[str, typer.Option("--table", help="schema.table, e.g. public.articles")],
    id_column: Annotated[str, typer.Option("--id-column", help="The column holding the item id.")],
    text_columns: Annotated[str | None, typer.Option(
        "--text-columns", help="Comma-separated columns, joined by a blank line.")] = None,
    text_template: Annotated[str | None, typer.Option(
        "--text-template", help="Instead of --text-columns, e.g. '{headline}: {body}'.")] = None,
    title_column: Annotated[str | None, typer.Option("--title-column")] = None,
    metadata_columns: Annotated[str | None, typer.Option(
        "--metadata-columns", help="Comma-separated columns kept as filterable metadata.")] = None,
    version_column: Annotated[str | None, typer.Option(
        "--version-column", help="An integer column that grows with every change "
                                 "(default: the change's log position).")] = None,
    tenant: Annotated[str, typer.Option("--tenant")] = "default",
    kind: Annotated[str, typer.Option("--kind", help="postgres or mysql.")] = "postgres",
    as_json: AsJson = False,
) -> None:
    """Capture a table: its rows are indexed (snapshot), then every insert, update and delete."""
    try:
        spec = SourceSpec(
            name=name, tenant=tenant, kind=kind, dsn=dsn, table=table, id_column=id_column,  # type: ignore[arg-type]
            title_column=title_column, text_columns=_columns(text_columns), text_template=text_template,
            metadata_columns=_columns(metadata_columns), version_column=version_column,
        )
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'source'}: {e['msg']}"
                             for e in error.errors())
        raise fail(problems, 2) from error
    _print(_run(lambda admin: admin.add(spec)), as_json)


@app.command("list")
def list_sources(
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant's.")] = None,
    as_json: AsJson = False,
) -> None:
    """Every source with its connector's state."""
    sources = _run(lambda admin: admin.list_sources(tenant))
    if as_json:
        print(json.dumps(sources, indent=2, default=str))
        return
    table = Table("name", "tenant", "table", "topic", "connector")
    for s in sources:
        table.add_row(s["name"], s["tenant"], s["table"], s["topic"], s["connector"]["state"])
    out.print(table)


@app.command("show")
def show(name: Annotated[str, typer.Argument()], as_json: AsJson = False) -> None:
    """One source: its mapping, its change topic and its connector's state (errors included)."""
    _print(_run(lambda admin: admin.show(name)), as_json)


@app.command("remove")
def remove(
    name: Annotated[str, typer.Argument()],
    delete_items: Annotated[bool, typer.Option(
        "--delete-items/--keep-items", help="Also delete the items it indexed (default: keep them).",
    )] = False,
    as_json: AsJson = False,
) -> None:
    """Stop capturing (connector, replication slot, publication); --delete-items also deletes
    the items it indexed."""
    result = _run(lambda admin: admin.remove(name, delete_items))
    if as_json:
        print(json.dumps(result))
    else:
        out.print(f"removed {name}; {result['items_deleted']} items deleted")
