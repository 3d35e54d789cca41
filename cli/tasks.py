"""`flywheel tasks`: long-running tasks (training, deploy, reindex), their progress, cancel and
retry. An operator's tool: it reaches MongoDB and Kafka directly, for every tenant (the REST
API's cancel and retry are the tenant admin's, for their own tenant's tasks)."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.common import Bootstrap, JsonOutput, bootstrap_or_default, fail, out
from core.bootstrap import build_task_store
from core.config import get_settings
from core.task_control import TaskConflict
from producers.publisher import Publisher, PublisherError
from producers.task_retry import NoSuchTask, retry_task

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
    str | None, typer.Option("--status", help="pending, running, succeeded, failed, rejected or cancelled.")]
TaskId = Annotated[str, typer.Argument(help="The task id (a training run id, reindex-<version>...).")]
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
def show(task_id: TaskId, as_json: JsonOutput = False) -> None:
    """One task with all its details (stage, progress, error, links, details)."""
    task = asyncio.run(_get(task_id))
    if task is None:
        raise fail(f"no task {task_id!r}", 1)
    if as_json:
        print(json.dumps(task, default=str, indent=2))
        return
    for field in ("id", "type", "tenant", "status", "stage", "progress", "created_at", "updated_at",
                  "cancel_requested_at", "error"):
        if task.get(field) is not None:
            out.print(f"{field}: {task[field]}", highlight=False)
    for field in ("links", "details"):
        if task.get(field):
            out.print(f"{field}: {json.dumps(task[field], default=str)}", highlight=False)


async def _cancel(task_id: str) -> dict[str, Any] | None:
    tasks = await build_task_store(get_settings())
    try:
        return await tasks.request_cancel(task_id)
    finally:
        await tasks.close()


async def _retry(task_id: str, bootstrap: str) -> dict[str, Any]:
    tasks = await build_task_store(get_settings())
    try:
        async with Publisher(bootstrap, source="flywheel-cli") as publisher:
            return await retry_task(task_id, tasks, publisher, source="flywheel-cli")
    finally:
        await tasks.close()


@app.command("cancel")
def cancel(task_id: TaskId, as_json: JsonOutput = False) -> None:
    """Cancel a pending task (at once) or a running one (its worker stops at its next step)."""
    try:
        task = asyncio.run(_cancel(task_id))
    except TaskConflict as error:
        raise fail(str(error), 1) from error
    if task is None:
        raise fail(f"no task {task_id!r}", 1)
    if as_json:
        print(json.dumps(task, default=str, indent=2))
    elif task["status"] == "cancelled":
        out.print(f"task [bold]{task_id}[/] cancelled")
    else:
        out.print(f"task [bold]{task_id}[/] asked to stop; it ends cancelled at its next step "
                  f"(follow: flywheel tasks show {task_id})")


@app.command("retry")
def retry(task_id: TaskId, as_json: JsonOutput = False, bootstrap: Bootstrap = None) -> None:
    """Run a failed or cancelled task's request again: a training run as a new run linked to
    the old one, a deploy or reindex as the same task."""
    try:
        task = asyncio.run(_retry(task_id, bootstrap_or_default(bootstrap)))
    except NoSuchTask as error:
        raise fail(str(error), 1) from error
    except (TaskConflict, PublisherError) as error:
        raise fail(str(error), 1) from error
    if as_json:
        print(json.dumps({"task_id": task["id"], "status": task["status"], "retry_of": task_id}))
    else:
        new = task["id"]
        out.print(f"retrying {task_id} as task [bold]{new}[/] (follow: flywheel tasks show {new})")
