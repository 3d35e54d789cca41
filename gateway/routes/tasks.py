"""Long-running tasks: training, deploy and reindex, from MongoDB; cancel and retry them.

Reading a task needs the `search` scope and sees the key's tenant's tasks (an operator's:
any tenant's). Cancelling and retrying need `admin` for the task's own tenant, or `operator`:
another tenant's task answers 404, as if it did not exist, and does not change. The rules
of either are core.task_control's.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, status

from core.task_control import TaskConflict
from gateway.bodies import Task, TaskAccepted
from gateway.deps import Admin, PublisherDep, Searching, TasksDep
from gateway.problems import Problem
from gateway.security import Principal
from producers.task_retry import NoSuchTask, retry_task
from schemas.envelope import TENANT_PATTERN

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])


def _tenant(who: Principal) -> str | None:
    """The tenant whose tasks the key may see and act on (None: an operator's, every one)."""
    return None if who.operator else who.tenant


@router.get("/{task_id}", response_model=Task)
async def get_task(task_id: str, who: Searching, tasks: TasksDep) -> Task:
    task = await tasks.get(task_id, tenant=_tenant(who))
    if task is None:
        raise Problem(404, f"no task {task_id!r}")
    return Task.model_validate(task)


@router.get("", response_model=list[Task])
async def list_tasks(
    who: Searching, tasks: TasksDep,
    type: Literal["training", "deploy", "reindex"] | None = None,
    status: Literal["pending", "running", "succeeded", "failed", "rejected", "cancelled"] | None = None,
    limit: int = Query(default=50, ge=1, le=500),
    tenant: str | None = Query(default=None, pattern=TENANT_PATTERN, max_length=128,
                               description="Operator keys: one tenant's tasks (default: every tenant's)."),
) -> list[Task]:
    """The key's tenant's tasks, newest first; an operator's key sees every tenant's."""
    if tenant is not None and tenant != who.tenant and not who.operator:
        raise Problem(403, f"this API key sees tenant {who.tenant!r}'s tasks only; another tenant's need "
                           "the 'operator' scope",
                      errors=[{"field": "tenant", "reason": "not the key's tenant"}])
    scope = tenant if tenant is not None else _tenant(who)
    return [Task.model_validate(t) for t in await tasks.list(scope, type, status, limit)]


@router.post("/{task_id}/cancel", response_model=Task)
async def cancel_task(task_id: str, who: Admin, tasks: TasksDep) -> Task:
    """A pending task ends `cancelled` at once (its request is skipped when consumed); a running
    one gets `cancel_requested_at` and its worker stops at its next step, then ends `cancelled`."""
    try:
        task = await tasks.request_cancel(task_id, tenant=_tenant(who))
    except TaskConflict as error:
        raise Problem(409, str(error), errors=[{"field": "status", "reason": str(error)}]) from error
    if task is None:
        raise Problem(404, f"no task {task_id!r}")
    return Task.model_validate(task)


@router.post("/{task_id}/retry", status_code=status.HTTP_202_ACCEPTED, response_model=TaskAccepted)
async def retry(task_id: str, who: Admin, tasks: TasksDep, publisher: PublisherDep) -> TaskAccepted:
    """A failed or cancelled task's request published again: a training run as a new run
    (`details.retry_of`), a deploy or reindex as the same task reopened."""
    try:
        task = await retry_task(task_id, tasks, publisher, tenant=_tenant(who))
    except NoSuchTask as error:
        raise Problem(404, str(error)) from error
    except TaskConflict as error:
        raise Problem(409, str(error), errors=[{"field": "status", "reason": str(error)}]) from error
    return TaskAccepted(task_id=task["id"], status_url=f"/v1/tasks/{task['id']}")
