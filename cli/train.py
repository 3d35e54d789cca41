"""`flywheel train`: request a fine-tuning run, and optionally follow it to the end."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from cli.common import Bootstrap, bootstrap_or_default, err, fail, out
from core.bootstrap import build_task_store
from core.config import get_settings
from core.fusion import WEIGHT_GRID, weight_metric
from producers.publisher import Publisher, PublisherError
from schemas.envelope import INT64_MAX
from schemas.topics import TRAINING_REQUESTED
from schemas.training import Recipe, TrainingRequested

FINAL = ("succeeded", "failed", "rejected", "cancelled")


async def _request(bootstrap: str, event: TrainingRequested) -> None:
    tasks = await build_task_store(get_settings())
    try:
        await tasks.create(event.run_id, "training", event.tenant, {"request": event.request_details()})
    finally:
        await tasks.close()
    async with Publisher(bootstrap, source="flywheel-cli") as publisher:
        await publisher.publish(TRAINING_REQUESTED, event)


async def _get(task_id: str) -> dict[str, Any] | None:
    tasks = await build_task_store(get_settings())
    try:
        return await tasks.get(task_id)
    finally:
        await tasks.close()


def wait_for_task(task_id: str, timeout_s: float, show_progress: bool) -> dict[str, Any]:
    """Poll the task until it is final; a progress bar follows its stage and progress."""
    deadline = time.monotonic() + timeout_s
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), console=err, disable=not show_progress) as bar:
        handle = bar.add_task("queued", total=1.0)
        while True:
            task = asyncio.run(_get(task_id))
            if task is not None:
                bar.update(handle, completed=float(task.get("progress") or 0.0),
                           description=f"{task['status']}: {task.get('stage', '')}")
                if task["status"] in FINAL:
                    return task
            if time.monotonic() > deadline:
                raise fail(f"training run {task_id} did not finish within {timeout_s:.0f}s", 1)
            time.sleep(1.0)


def train(
    recipe: Annotated[Recipe | None, typer.Option(
        "--recipe", help="fine-tune (the transformer) or linear-map (a map after it); default: the trainer's "
                         "FLYWHEEL_TRAINING_RECIPE.")] = None,
    epochs: Annotated[int | None, typer.Option(
        "--epochs", min=1, max=100, help="Passes over the pairs; default: the recipe's (fine-tune 1, "
                                         "linear-map FLYWHEEL_TRAINING_MAP_EPOCHS).")] = None,
    min_sessions: Annotated[
        int, typer.Option("--min-sessions", min=1, max=INT64_MAX,
                          help="Do not train with fewer sessions with clicks.")
    ] = 100,
    gate_margin: Annotated[float, typer.Option(
        "--gate-margin", min=0.0, max=1.0,
        help="Publish only if candidate nDCG@10 exceeds the active model's by more than this.")] = 0.0,
    base_version: Annotated[
        str | None, typer.Option("--base-version", help="Start from this version (default: active).")
    ] = None,
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant recorded on the task.")] = "default",
    datasets: Annotated[list[str] | None, typer.Option(
        "--dataset", help="Also learn from this uploaded dataset of the tenant (repeat for more).")] = None,
    eval_dataset: Annotated[str | None, typer.Option(
        "--eval-dataset", help="Judge the candidate on this uploaded dataset, not on sessions.")] = None,
    use_sessions: Annotated[bool, typer.Option(
        "--sessions/--no-sessions", help="Learn from the tenant's click sessions.")] = True,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the run until it ends.")] = False,
    timeout_s: Annotated[float, typer.Option("--timeout", help="Seconds to wait with --wait.")] = 3600.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    bootstrap: Bootstrap = None,
) -> None:
    """Request fine-tuning on gathered sessions (the trainer service does it).

    With --wait: exit status 0 when the candidate passed the gate and was published, 1 when
    the run failed or was rejected.
    """
    try:
        event = TrainingRequested(
            run_id=f"run-{uuid.uuid4().hex}", base_version=base_version, min_sessions=min_sessions,
            recipe=recipe, epochs=epochs, gate_margin=gate_margin, tenant=tenant, source="flywheel-cli",
            use_sessions=use_sessions, datasets=datasets or [], eval_dataset=eval_dataset,
        )
    except ValidationError as error:
        raise fail(f"invalid training request: {error.errors()[0]['msg']}", 2) from error
    try:
        asyncio.run(_request(bootstrap_or_default(bootstrap), event))
    except PublisherError as error:
        raise fail(str(error), 1) from error
    if not wait:
        if as_json:
            print(json.dumps({"task_id": event.run_id, "status": "pending"}))
        else:
            out.print(f"training requested: task [bold]{event.run_id}[/] (follow: flywheel tasks show "
                      f"{event.run_id})")
        return
    task = wait_for_task(event.run_id, timeout_s, show_progress=not as_json)
    if as_json:
        print(json.dumps(task, default=str, indent=2))
    else:
        details = task.get("details") or {}
        if task["status"] == "succeeded":
            out.print(f"[green]published[/] model version {details.get('model_version')} "
                      f"(registry version {details.get('registry_version')})")
        else:
            out.print(f"[yellow]{task['status']}[/]: {task.get('error')}")
        metrics = details.get("metrics") or {}
        if metrics:
            base, candidate = metrics["base"], metrics["candidate"]
            out.print(f"nDCG@10 base {base['ndcg_at_10']:.4f} -> candidate {candidate['ndcg_at_10']:.4f}")
            if "fusion_weight" in candidate:
                out.print(f"hybrid nDCG@10 base {base['hybrid_ndcg_at_10']:.4f} -> candidate "
                          f"{candidate['hybrid_ndcg_at_10']:.4f} at vector weight "
                          f"{candidate['fusion_weight']:g} (held-out queries with a BM25 ranking: "
                          f"{candidate['fusion_queries']:g})")
                curve = "  ".join(f"{w:g}: {candidate[weight_metric(w)]:.4f}" for w in WEIGHT_GRID
                                  if weight_metric(w) in candidate)
                out.print(f"candidate's hybrid nDCG@10 by vector weight: {curve}")
    if task["status"] != "succeeded":
        raise typer.Exit(1)
