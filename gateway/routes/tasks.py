"""Long-running tasks: training, deploy and reindex, from MongoDB."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query

from gateway.bodies import Task
from gateway.deps import Searching, TasksDep
from gateway.problems import Problem

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])


@router.get("/{task_id}", response_model=Task)
async def get_task(task_id: str, who: Searching, tasks: TasksDep) -> Task:
    task = await tasks.get(task_id, tenant=who.tenant)
    if task is None:
        raise Problem(404, f"no task {task_id!r}")
    return Task.model_validate(task)


@router.get("", response_model=list[Task])
async def list_tasks(
    who: Searching, tasks: TasksDep,
    type: Literal["training", "deploy", "reindex"] | None = None,
    status: Literal["pending", "running", "succeeded", "failed", "rejected"] | None = None,
    limit: int = Query(default=50, ge=1, le=500),
) -> list[Task]:
    return [Task.model_validate(t) for t in await tasks.list(who.tenant, type, status, limit)]
