"""`flywheel tasks`: long-running tasks (training, deploy, reindex) and their progress."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.common import JsonOutput, fail, out
from core.bootstrap import build_task_store
from core.config import get_settings

app = typer.Typer(help="Long-running tasks: training runs, deploys, reindexes.")


async def _list(type_: str | None, status: str | None, limit: int) -> list[dict[str, Any]]:
    tasks = await build_task_store(get_settings())
    try:
        return await tasks.list(type=type_, status=status, limit=limit)
    finally:
        await tasks.close()


async def _get(task_id: str) -> dict[str, Any] | None:
    tasks = await build_task_store(get_settings())
    try:
        return await tasks.get(task_id)
    finally:
        await tasks.close()


TypeOption = Annotated[str | None, typer.Option("--type", help="training, deploy or reindex.")]
StatusOption = Annotated[
    str | None, typer.Option("--status", help="pending, running, succeeded, failed or rejected.")]
# As GET /v1/tasks's `limit`.
LimitOption = Annotated[int, typer.Option("--limit", min=1, max=500, help="At most this many, as the API.")]


@app.callback(invoke_without_command=True)
def tasks(
    ctx: typer.Context, type_: TypeOption = None, status: StatusOption = None, limit: LimitOption = 50,
    as_json: JsonOutput = False,
) -> None:
    """Long-running tasks: training runs, deploys, reindexes. Without a command: `list`."""
    if ctx.invoked_subcommand is None:
        list_tasks(type_, status, limit, as_json)


@app.command("list")
def list_tasks(
    type_: TypeOption = None, status: StatusOption = None, limit: LimitOption = 50,
    as_json: JsonOutput = False,
) -> None:
    """The latest tasks, newest first."""
    rows = asyncio.run(_list(type_, status, limit))
    if as_json:
        print(json.dumps(rows, default=str, indent=2))
        return
    table = Table("id", "type", "status", "stage", "progress", "updated", "error")
    for row in rows:
        table.add_row(row["id"], row["type"], row["status"], row.get("stage", ""),
                      f"{100 * float(row.get('progress') or 0):.0f}%", str(row.get("updated_at", ""))[:19],
                      (row.get("error") or "")[:60])
    out.print(table)


@app.command("show")
def show(
    task_id: Annotated[str, typer.Argument(help="The task id (a training run id, reindex-<version>...).")],
    as_json: JsonOutput = False,
) -> None:
    """One task with all its details (stage, progress, error, links, details)."""
    task = asyncio.run(_get(task_id))
    if task is None:
        raise fail(f"no task {task_id!r}", 1)
    if as_json:
        print(json.dumps(task, default=str, indent=2))
        return
    for field in ("id", "type", "tenant", "status", "stage", "progress", "created_at", "updated_at", "error"):
        if task.get(field) is not None:
            out.print(f"{field}: {task[field]}", highlight=False)
    for field in ("links", "details"):
        if task.get(field):
            out.print(f"{field}: {json.dumps(task[field], default=str)}", highlight=False)
