"""`flywheel datasets`: a tenant's uploaded judgments (labelled data, a training source).

An operator's tool on the stack's machine: it validates the files here and writes to MongoDB
directly, for any tenant (`--tenant`), and takes files of any size (the REST API's
`POST /v1/datasets` is the tenant admin's, bounded by the gateway's body limit). Rejects are
written and reported as `flywheel publish` does.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.common import JsonOutput, err, fail, out
from core.adapters.dataset_store import DatasetExists, DatasetStore
from core.config import get_settings
from core.datasets import DatasetError, DatasetFormat, DatasetRejected, ParsedDataset, check_name, parse
from schemas.envelope import DEFAULT_TENANT

app = typer.Typer(help="A tenant's judgment datasets: upload, list, show, delete.")

Tenant = Annotated[str, typer.Option("--tenant", help="Whose datasets (default: the default tenant).")]
Name = Annotated[str, typer.Argument(help="The dataset's name (letters, digits, '.', '_', '-').")]
QrelsFile = Annotated[Path | None, typer.Option(
    "--qrels", exists=True, dir_okay=False, readable=True, help="BEIR qrels TSV (with --queries: BEIR).")]
QueriesFile = Annotated[Path | None, typer.Option(
    "--queries", exists=True, dir_okay=False, readable=True, help='BEIR queries ({"_id", "text"} lines).')]
AnyTenant = Annotated[str | None, typer.Option("--tenant", help="One tenant's (default: every tenant's).")]


async def _with_store(work: Any) -> Any:
    settings = get_settings()
    store = await DatasetStore.connect(settings.mongo_uri, settings.mongo_db)
    try:
        return await work(store)
    finally:
        await store.close()


def _write_rejects(parsed: ParsedDataset, path: Path) -> None:
    path.unlink(missing_ok=True)
    if parsed.rejects:
        path.write_text("".join(reject.to_json() + "\n" for reject in parsed.rejects), encoding="utf-8")


@app.command("upload")
def upload(
    name: Name,
    judgments: Annotated[Path | None, typer.Argument(
        exists=True, dir_okay=False, readable=True,
        help='JSON Lines of {"query", "item_id", "grade"?, "query_id"?} (format jsonl).')] = None,
    qrels: QrelsFile = None,
    queries: QueriesFile = None,
    tenant: Tenant = DEFAULT_TENANT,
    rejects: Annotated[Path | None, typer.Option(
        "--rejects", help="Where to write rejects (default: <FILE>.rejects.jsonl).")] = None,
    allow_rejects: Annotated[bool, typer.Option(
        "--allow-rejects", help="Exit 0 even when some lines were rejected.")] = False,
    as_json: JsonOutput = False,
) -> None:
    """Validate every line and store the valid judgments as dataset NAME of the tenant. Give a
    JSON Lines FILE, or --qrels and --queries for BEIR. Exits 1 when any line was rejected,
    unless --allow-rejects."""
    if (judgments is None) == (qrels is None and queries is None):
        raise fail("give a JSON Lines FILE, or --qrels and --queries (BEIR), not both")
    format: DatasetFormat = "jsonl" if judgments is not None else "beir"
    source = judgments or qrels or queries
    assert source is not None
    rejects_path = rejects or source.with_name(source.name + ".rejects.jsonl")
    try:
        check_name(name)
        parsed = parse(format, judgments.read_text(encoding="utf-8") if judgments else None,
                       qrels.read_text(encoding="utf-8") if qrels else None,
                       queries.read_text(encoding="utf-8") if queries else None)
    except DatasetRejected as error:
        _write_rejects(error.parsed, rejects_path)
        raise fail(f"{error}; rejects (line number, reason, raw line): {rejects_path}", 1) from error
    except DatasetError as error:
        raise fail(str(error)) from error
    _write_rejects(parsed, rejects_path)
    try:
        dataset = asyncio.run(_with_store(lambda store: store.create(tenant, name, format, parsed)))
    except DatasetExists as error:
        raise fail(str(error), 1) from error
    stats = dataset["stats"]
    if as_json:
        print(json.dumps({**dataset, "rejects": str(rejects_path) if parsed.rejects else None},
                         default=str, indent=2))
    else:
        out.print(f"dataset {tenant}/{name}: stored {stats['judgments']} judgments of {stats['queries']} "
                  f"queries, rejected {stats['rejected']}", highlight=False)
    if parsed.rejects:
        err.print(f"rejects (line number, reason, raw line): {rejects_path}", highlight=False)
        if not allow_rejects:
            raise typer.Exit(1)


@app.command("list")
def list_datasets(tenant: AnyTenant = None, as_json: JsonOutput = False) -> None:
    """The datasets, by tenant and name."""
    rows = asyncio.run(_with_store(lambda store: store.list(tenant)))
    if as_json:
        print(json.dumps(rows, default=str, indent=2))
        return
    table = Table("tenant", "name", "format", "status", "judgments", "queries", "rejected", "created")
    for row in rows:
        stats = row.get("stats") or {}
        table.add_row(row["tenant"], row["name"], row["format"], row["status"], str(stats.get("judgments")),
                      str(stats.get("queries")), str(stats.get("rejected")), str(row["created_at"])[:19])
    out.print(table)


@app.command("show")
def show(name: Name, tenant: Tenant = DEFAULT_TENANT, as_json: JsonOutput = False) -> None:
    """One dataset: its statistics, first rejects and first judgments."""
    found = asyncio.run(_with_store(lambda store: store.get(tenant, name, 10)))
    if found is None:
        raise fail(f"no dataset {name!r} of tenant {tenant!r}", 1)
    if as_json:
        print(json.dumps(found, default=str, indent=2))
        return
    for field in ("tenant", "name", "format", "status", "created_at", "stats"):
        out.print(f"{field}: {found[field]}", highlight=False)
    for row in found.get("sample") or []:
        out.print(f"  {row}", highlight=False)


@app.command("delete")
def delete(name: Name, tenant: Tenant = DEFAULT_TENANT, as_json: JsonOutput = False) -> None:
    """Remove a dataset and its judgments."""
    removed = asyncio.run(_with_store(lambda store: store.delete(tenant, name)))
    if not removed:
        raise fail(f"no dataset {name!r} of tenant {tenant!r}", 1)
    if as_json:
        print(json.dumps({"name": name, "tenant": tenant, "deleted": True}))
    else:
        out.print(f"deleted dataset {tenant}/{name}", highlight=False)
