"""Cancelling and retrying long-running tasks (training, deploy, reindex): the state rules.

    pending  --cancel--> cancelled (final at once: the consumer that takes the request finds
                         the task cancelled and skips it, however often it is delivered)
    running  --cancel--> running, `cancel_requested_at` set; the worker checks at its next
                         step (trainer: every optimizer step; reindexer: every batch; deployer:
                         every stage), undoes what it must and ends the task `cancelled`
    final    --cancel--> refused: nothing to cancel
    failed, cancelled --retry--> the request again: a training run as a new run linked to
                         the old one (`details.retry_of`, the old task's `links.retried_by`);
                         a deploy or reindex, whose task id is its model version's, as the same
                         task reopened (`details.retries` counts them)
    anything else --retry--> refused

Who may: the task's own tenant's admin, or an operator (the gateway checks; the CLI is an
operator's tool, it reaches the stores directly).
"""

from __future__ import annotations

from typing import Any

STATUSES = ("pending", "running", "succeeded", "failed", "rejected", "cancelled")
FINAL_STATUSES = ("succeeded", "failed", "rejected", "cancelled")
CANCELLABLE = ("pending", "running")
RETRYABLE = ("failed", "cancelled")


class TaskCancelled(Exception):
    """Raised inside a worker when its task was cancelled: it stops, undoes, ends `cancelled`."""


class TaskConflict(ValueError):
    """The task is in no state for what was asked (answered 409)."""


def cancel_refusal(task: dict[str, Any]) -> str | None:
    """Why the task cannot be cancelled, or None if it can."""
    status = task.get("status")
    if status in CANCELLABLE:
        return None
    return f"task {task.get('id')!r} is {status}: only a pending or running task can be cancelled"


def retry_refusal(task: dict[str, Any]) -> str | None:
    """Why the task cannot be retried, or None if it can."""
    status = task.get("status")
    if status in RETRYABLE:
        return None
    return f"task {task.get('id')!r} is {status}: only a failed or cancelled task can be retried"


def cancel_requested(task: dict[str, Any] | None) -> bool:
    """Whether the worker holding this task should stop: cancelled, or asked to be."""
    return task is not None and (task.get("status") == "cancelled" or bool(task.get("cancel_requested_at")))


def stop_if_cancelled(task: dict[str, Any] | None) -> None:
    """For workers: raise TaskCancelled when the task (as an update returned it) is cancelled."""
    if cancel_requested(task):
        raise TaskCancelled(f"task {task['id'] if task else '?'} was cancelled")
