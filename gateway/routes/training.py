"""Training runs and reindexing: accepted as tasks, carried out by the consumers."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from gateway.bodies import ReindexRequest, TaskAccepted, TrainingRunRequest
from gateway.deps import Admin, PublisherDep, TasksDep
from schemas.reindex import ReindexRequested
from schemas.topics import REINDEX_REQUESTED, TRAINING_REQUESTED
from schemas.training import TrainingRequested

router = APIRouter(prefix="/v1", tags=["training"])


@router.post("/training-runs", status_code=status.HTTP_202_ACCEPTED, response_model=TaskAccepted)
async def request_training(
    body: TrainingRunRequest, who: Admin, publisher: PublisherDep, tasks: TasksDep
) -> TaskAccepted:
    run_id = f"run-{uuid.uuid4().hex}"
    event = TrainingRequested(run_id=run_id, tenant=who.tenant, source="gateway", **body.model_dump())
    await tasks.create(run_id, "training", who.tenant, body.model_dump(mode="json"))
    await publisher.publish(TRAINING_REQUESTED, event)
    return TaskAccepted(task_id=run_id, status_url=f"/v1/tasks/{run_id}")


@router.post("/reindex", status_code=status.HTTP_202_ACCEPTED, response_model=TaskAccepted)
async def request_reindex(
    body: ReindexRequest, who: Admin, publisher: PublisherDep, tasks: TasksDep
) -> TaskAccepted:
    task_id = f"reindex-{body.model_version}"
    await tasks.create(task_id, "reindex", who.tenant, body.model_dump())
    await publisher.publish(REINDEX_REQUESTED, ReindexRequested(
        model_version=body.model_version, activate=body.activate, tenant=who.tenant, source="gateway"))
    return TaskAccepted(task_id=task_id, status_url=f"/v1/tasks/{task_id}")
