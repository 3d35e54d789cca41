"""Retrying a failed or cancelled task: its request published again (rules: core.task_control).

A training run is retried as a new run (a new run id, the same request), linked both ways:
the new task's `details.retry_of` names the old one, the old task's `links.retried_by` the
new one; the tenant's one-training-at-a-time turn applies. A deploy or reindex task's id is
its model version's, so it is retried as the same task reopened (pending again,
`details.retries` counted) and its request published again; the reindexer resumes from its
replay group's committed offsets.

Used by the gateway (`POST /v1/tasks/{id}/retry`: the task's tenant's admin, or an operator)
and the CLI (`flywheel tasks retry`: an operator's tool).
"""

from __future__ import annotations

import uuid
from typing import Any

from core.adapters.task_store import TaskStore
from core.task_control import TaskConflict, retry_refusal
from producers.publisher import Publisher, PublisherError
from schemas.model_published import ModelPublished
from schemas.reindex import ReindexRequested
from schemas.topics import MODEL_PUBLISHED, REINDEX_REQUESTED, TRAINING_REQUESTED
from schemas.training import REQUEST_FIELDS, TrainingRequested


class NoSuchTask(LookupError):
    """No task with that id (for that tenant)."""


async def retry_task(
    task_id: str, tasks: TaskStore, publisher: Publisher, tenant: str | None = None, source: str = "gateway"
) -> dict[str, Any]:
    """Retry the task `task_id` (of `tenant`, when given); returns the task that now carries
    the request: the new training run, or the reopened deploy or reindex."""
    task = await tasks.get(task_id, tenant=tenant)
    if task is None:
        raise NoSuchTask(f"no task {task_id!r}")
    refusal = retry_refusal(task)
    if refusal is not None:
        raise TaskConflict(refusal)
    if task["type"] == "training":
        return await _retry_training(task, tasks, publisher, source)
    details = task.get("details") or {}
    topic: Any
    event: ModelPublished | ReindexRequested
    if task["type"] == "reindex":
        topic, event = REINDEX_REQUESTED, ReindexRequested(
            model_version=str(details["model_version"]), activate=bool(details.get("activate", True)),
            from_offset=int(details.get("from_offset") or 0), tenant=task["tenant"], source=source)
        fields: dict[str, Any] = {"details.transient_failures": 0}
    elif task["type"] == "deploy":
        topic, event = MODEL_PUBLISHED, ModelPublished(
            model_version=str(details["model_version"]), registry_version=int(details["registry_version"]),
            run_id=str(details["run_id"]), artifact_uri=str(details["artifact_uri"]),
            metrics=dict(details.get("metrics") or {}), tenant=task["tenant"], source=source)
        fields = {}
    else:
        raise TaskConflict(f"task {task_id!r} is of type {task['type']!r}, which cannot be retried")
    reopened = await tasks.reopen(task_id, **fields, **{"details.retry_event_id": str(event.event_id)})
    await _publish(tasks, task_id, publisher, topic, event)
    return reopened


async def _retry_training(
    task: dict[str, Any], tasks: TaskStore, publisher: Publisher, source: str
) -> dict[str, Any]:
    details = task.get("details") or {}
    request = details.get("request") or {k: details[k] for k in REQUEST_FIELDS if k in details}
    run_id = f"run-{uuid.uuid4().hex}"
    event = TrainingRequested(run_id=run_id, tenant=task["tenant"], source=source,
                              **{k: v for k, v in request.items() if k in REQUEST_FIELDS})
    holder = await tasks.take_turn("training", event.tenant, run_id)
    if holder is not None:
        raise TaskConflict(f"tenant {event.tenant!r} has a training run that is not finished: "
                           f"{holder['id']} ({holder['status']}); one at a time")
    new, _ = await tasks.create(run_id, "training", event.tenant, {
        "request": event.request_details(), "retry_of": task["id"]})
    await tasks.link(task["id"], "retried_by", run_id)
    await _publish(tasks, run_id, publisher, TRAINING_REQUESTED, event)
    return new


async def _publish(tasks: TaskStore, task_id: str, publisher: Publisher, topic: Any,
                   event: TrainingRequested | ModelPublished | ReindexRequested) -> None:
    try:
        await publisher.publish(topic, event)
    except PublisherError as error:
        # Never published: the task ends here (and may be retried again).
        await tasks.update(task_id, status="failed", error=f"not published: {error}")
        raise
