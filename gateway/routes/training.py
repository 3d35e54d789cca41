"""Training runs and reindexing: accepted as tasks, carried out by the consumers.

A tenant has at most one training run that is not final: another request while one is
pending or running answers 409 naming it (the tenant's turn, core.adapters.task_store). A
reindex builds a version's index of the caller's tenant's items: one per version per tenant.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, status

from core.adapters.pgvector import PgVectorStore
from core.adapters.task_store import TaskStore
from core.rollout import reindex_task_id
from core.serving import BASE_SERVING_VERSION
from gateway.bodies import ReindexRequest, TaskAccepted, TrainingRunRequest
from gateway.deps import Admin, PublisherDep, StoreDep, TasksDep, resources
from gateway.problems import Problem
from producers.publisher import Delivery, Publisher, PublisherError
from schemas.reindex import ReindexRequested
from schemas.topics import REINDEX_REQUESTED, TRAINING_REQUESTED
from schemas.training import TrainingRequested

router = APIRouter(prefix="/v1", tags=["training"])


@router.post("/training-runs", status_code=status.HTTP_202_ACCEPTED, response_model=TaskAccepted)
async def request_training(
    body: TrainingRunRequest, who: Admin, publisher: PublisherDep, tasks: TasksDep, request: Request,
) -> TaskAccepted:
    await _check_datasets(body, who.tenant, request)
    await check_base_version(body.base_version, who.tenant, request)
    run_id = f"run-{uuid.uuid4().hex}"
    event = TrainingRequested(run_id=run_id, tenant=who.tenant, source="gateway", **body.model_dump())
    await start_training(event, tasks, publisher)
    return TaskAccepted(task_id=run_id, status_url=f"/v1/tasks/{run_id}")


async def _check_datasets(body: TrainingRunRequest, tenant: str, request: Request) -> None:
    """Every dataset the run names is one of the caller's tenant's (else 422 naming it)."""
    named = [("datasets", name) for name in body.datasets]
    named += [("eval_dataset", body.eval_dataset)] if body.eval_dataset else []
    if not named:
        return
    store = await resources(request).datasets()
    missing = [{"field": field, "reason": f"tenant {tenant!r} has no dataset {name!r}"}
               for field, name in named if await store.get(tenant, name) is None]
    if missing:
        raise Problem(422, "the run names datasets this tenant does not have: upload them first "
                           "(POST /v1/datasets)", errors=missing)


async def version_owner(version: str, store: PgVectorStore, tasks: TaskStore) -> tuple[bool, str | None]:
    """Whether the platform knows `version` (its catalogue, or a deploy not yet indexed
    anywhere), and the tenant that trained it (None: shared)."""
    owners = await store.owners()
    if version in owners:
        return True, owners[version]
    deploy = await tasks.get(f"deploy-{version}")
    return (True, deploy["tenant"]) if deploy else (False, None)


async def check_base_version(version: str | None, tenant: str, request: Request) -> None:
    """A run starts from the shared base or a version of the caller's tenant: another tenant's
    version (its weights learnt from that tenant's sessions) answers 404, as does one unknown."""
    if version is None or version == BASE_SERVING_VERSION:
        return
    known, owner = await version_owner(version, await resources(request).store(),
                                       await resources(request).tasks())
    if not known or owner not in (None, tenant):
        raise Problem(404, f"model version {version} is not a version of tenant {tenant!r}",
                      errors=[{"field": "base_version", "reason": "not a version of the tenant"}])


async def start_training(
    event: TrainingRequested, tasks: TaskStore, publisher: Publisher) -> Delivery:
    """Create the run's task and publish the request, if the run id is free (or the tenant's
    own) and the tenant has no other training run unfinished; else 409."""
    existing = await tasks.get(event.run_id)
    if existing is not None and (existing["tenant"] != event.tenant or existing["type"] != "training"):
        raise Problem(409, f"run_id {event.run_id!r} is taken; choose another")
    holder = await tasks.take_turn("training", event.tenant, event.run_id)
    if holder is not None:
        pending, state = holder["id"], holder["status"]
        raise Problem(409, f"tenant {event.tenant!r} has a training run that is not finished: {pending} "
                           f"({state}); one at a time, see /v1/tasks/{pending}",
                      errors=[{"field": "tenant", "reason": f"training run {pending} is {state}"}])
    await tasks.create(event.run_id, "training", event.tenant, {"request": event.request_details()})
    try:
        return await publisher.publish(TRAINING_REQUESTED, event)
    except PublisherError as error:
        # Never published: the run ends here, and the tenant's turn is free again.
        await tasks.update(event.run_id, status="failed", error=f"not published: {error}")
        raise


@router.post("/reindex", status_code=status.HTTP_202_ACCEPTED, response_model=TaskAccepted)
async def request_reindex(
    body: ReindexRequest, who: Admin, publisher: PublisherDep, tasks: TasksDep, store: StoreDep,
) -> TaskAccepted:
    """Rebuild the index of `model_version` for the caller's tenant (its items only, into its
    lineage). The base version and versions the tenant trained may be reindexed; another
    tenant's version answers 404. One reindex per version per tenant: a request while one is
    pending or running joins it (the same task, nothing published again)."""
    version = body.model_version
    _, owner = await version_owner(version, store, tasks)
    if owner is not None and owner != who.tenant:
        raise Problem(404, f"model version {version} is not a version of tenant {who.tenant!r}",
                      errors=[{"field": "model_version", "reason": "another tenant's version"}])
    task_id = reindex_task_id(version, who.tenant)
    existing = await tasks.get(task_id)
    if existing is not None and existing["status"] in ("pending", "running"):
        return TaskAccepted(task_id=task_id, status_url=f"/v1/tasks/{task_id}")
    await tasks.create(task_id, "reindex", who.tenant, body.model_dump())
    try:
        await publisher.publish(REINDEX_REQUESTED, ReindexRequested(
            model_version=version, activate=body.activate, tenant=who.tenant, source="gateway"))
    except PublisherError as error:
        await tasks.update(task_id, status="failed", error=f"not published: {error}")
        raise
    return TaskAccepted(task_id=task_id, status_url=f"/v1/tasks/{task_id}")
