"""Model versions of the caller's tenant: list with metrics, promote or roll back, the A/B split.

Each tenant has its own lineage (core.adapters.pgvector.versions): its active version,
rollback target, split and online metrics; the base model is shared, a fine-tuned version
belongs to the tenant whose sessions trained it. An operator key acts on another tenant with
`?tenant=`; any other key naming a tenant not its own is refused (403)."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pymongo.errors import PyMongoError

from core.ab import InvalidSplit, configure_split, traffic_percent
from core.adapters.triton_repository import read_serving_decision
from core.config import Settings
from core.domain import ConcurrentChange
from core.rollout import ActivationError, UnknownVersion, activate_version
from gateway.bodies import (
    VERSION_PATTERN,
    ABSplitEndedInfo,
    ABSplitInfo,
    ABSplitRequest,
    Activated,
    ModelsResponse,
    ModelVersionInfo,
    Reverted,
)
from gateway.deps import (
    Admin,
    EmbedderDep,
    ExperimentsDep,
    Searching,
    SettingsDep,
    StoreDep,
    resources,
)
from gateway.problems import Problem
from gateway.security import Principal
from gateway.tenancy import acting_tenant
from schemas.envelope import TENANT_PATTERN

log = logging.getLogger("flywheel.gateway")
router = APIRouter(prefix="/v1/models", tags=["models"])

TenantParam = Annotated[str | None, Query(
    pattern=TENANT_PATTERN, max_length=128,
    description="Operator keys: the tenant whose lineage to act on (default: the key's own).")]


def lineage_of(who: Principal, tenant: str | None) -> str:
    """The tenant whose lineage the call acts on: the key's own, or any for an operator."""
    return acting_tenant(who, tenant, "models")


def held_out_metrics(scores: dict[str, float]) -> dict[str, float]:
    """The trainer's `ndcg_at_10` etc. as `ndcg@10`, without the query count."""
    return {name.replace("_at_", "@"): float(value) for name, value in scores.items() if "_at_" in name}


async def serving_decisions(tasks: Any, settings: Settings, versions: list[str]) -> dict[str, dict[str, Any]]:
    """The form each version serves: what it wrote in the model repository when Triton last
    loaded it (where this process can read the repository), else what its deploy recorded."""
    found: dict[str, dict[str, Any]] = {}
    try:
        for task in await tasks.list(type="deploy", status="succeeded", limit=1000):
            details = task.get("details") or {}
            if details.get("serving") and str(details.get("model_version")) not in found:
                found[str(details["model_version"])] = details["serving"]
    except (Problem, PyMongoError) as error:  # MongoDB down: the repository's files still answer
        log.warning("deploy records unavailable: %r", error)

    def from_repository() -> dict[str, dict[str, Any]]:
        read = {v: read_serving_decision(settings.triton_repository, settings.triton_model_name, v)
                for v in versions if v.isdigit()}
        return {v: decision for v, decision in read.items() if decision}

    return {**found, **await asyncio.to_thread(from_repository)}


@router.get("", response_model=ModelsResponse)
async def list_models(
    who: Searching, store: StoreDep, experiments: ExperimentsDep, request: Request, settings: SettingsDep,
    tenant: TenantParam = None,
) -> ModelsResponse:
    """Versions with their held-out scores from training (nDCG@10, MRR@10, Recall@10), their
    lineage (the training run, base version, dataset statistics, gate decision, MLflow run), A/B
    traffic share, click-through rate and MRR from the session documents (searches credited
    to the version that served them), improver adjustments, and the form Triton serves it in
    (`serving`: fp32, bf16, fp16, onnx or onnx-int8, with the measurements that chose it)."""
    tenant = lineage_of(who, tenant)
    lineage = store.for_tenant(tenant)
    active = await lineage.active_version()
    split = await experiments.split(tenant)
    ended = None if split else await experiments.splits.ended_split(tenant)
    online: dict[str, dict[str, float]] = {}
    read: int | None = None
    try:
        online, read = await experiments.online_metrics(await resources(request).sessions(), tenant)
    except Problem as error:  # MongoDB down: the list still answers, without online metrics
        log.warning("online metrics unavailable: %s", error.detail)
    states = await experiments.improver_states(tenant)
    evaluated: dict[str, dict[str, float]] = {}
    lineages: dict[str, dict[str, Any]] = {}
    try:
        evaluated = await (await resources(request).tasks()).evaluation_metrics()
        lineages = await (await resources(request).tasks()).lineage()
    except (Problem, PyMongoError) as error:  # MongoDB down: the list answers without them
        log.warning("training scores unavailable: %r", error)
    rows = await lineage.list_versions()
    serving: dict[str, dict[str, Any]] = {}
    try:
        serving = await serving_decisions(await resources(request).tasks(), settings,
                                          [str(row["version"]) for row in rows])
    except Problem as error:  # MongoDB down: the list answers without the deploy records
        log.warning("serving forms unavailable: %s", error.detail)
    versions = []
    for row in rows:
        version = row["version"]
        clicks = online.get(version)
        state = states.get(version)
        versions.append(ModelVersionInfo(
            active=version == active, owner=row.get("tenant"), **row,
            traffic={"percent": traffic_percent(version, active, split)},
            searches=int(clicks["searches"]) if clicks else 0,
            clicked_searches=int(clicks["clicked_searches"]) if clicks else 0,
            ctr=clicks["ctr"] if clicks else None, mrr=clicks["mrr"] if clicks else None,
            metrics={**held_out_metrics(evaluated.get(version, {})),
                     **({f"improver_{k}": float(v) for k, v in state["metrics"].items()} if state else {})},
            adjustments={k: state[k] for k in ("revision", "adjusted_chunks", "updated_at")} if state else {},
            serving=serving.get(str(version)),
            lineage=lineages.get(str(version)),
        ))
    return ModelsResponse(
        tenant=tenant, active_version=active, versions=versions,
        ab_split=ABSplitInfo(**vars(split)) if split else None,
        ab_split_ended=ABSplitEndedInfo(**vars(ended)) if ended else None,
        online_window_days=settings.ab_metrics_window_days, online_sessions=read,
    )


@router.put("/ab-split", response_model=ABSplitInfo)
async def set_ab_split(body: ABSplitRequest, who: Admin, store: StoreDep, experiments: ExperimentsDep,
                       tenant: TenantParam = None) -> ABSplitInfo:
    """Serve `percent` % of sessions (by a hash of the session id) with `candidate_version`,
    which needs a complete index that still receives new content; searches without a session id
    stay on the active version. 409 when the candidate cannot take traffic, or when an activation
    or reindex changed the versions while the split was being set (nothing was changed)."""
    tenant = lineage_of(who, tenant)
    try:
        split = await configure_split(experiments.splits.for_tenant(tenant), store.for_tenant(tenant),
                                      body.candidate_version, body.percent)
    except InvalidSplit as error:
        status = 404 if "has no index" in str(error) else 409
        raise Problem(status, str(error)) from error
    except ConcurrentChange as error:
        raise Problem(409, str(error)) from error
    experiments.forget_split(tenant)
    return ABSplitInfo(**vars(split))


@router.delete("/ab-split", status_code=204)
async def clear_ab_split(who: Admin, experiments: ExperimentsDep, tenant: TenantParam = None) -> None:
    """End the tenant's split: all its traffic goes to its active version."""
    tenant = lineage_of(who, tenant)
    await experiments.splits.clear_split(tenant)
    experiments.forget_split(tenant)


@router.delete("/{version}/adjustments", response_model=Reverted)
async def revert_adjustments(version: str, who: Admin, store: StoreDep, experiments: ExperimentsDep
                             ) -> Reverted:
    """Undo the improver on `version`: restore the original vectors of every adjusted chunk of
    the caller's tenant's items (an operator's key: of every tenant's). `revision` is the
    caller's tenant's improver revision of `version` afterwards."""
    if version not in {row["version"] for row in await store.list_versions(who.tenant)}:
        raise Problem(404, f"model version {version!r} has no index")
    restored = await experiments.adjustments.revert(version, None if who.operator else who.tenant)
    state = await experiments.adjustments.improver_state(version, who.tenant)
    return Reverted(version=version, restored_chunks=restored, revision=state.revision)


@router.post("/{version}/activate", response_model=Activated)
async def activate(
    version: str, who: Admin, store: StoreDep, embedder: EmbedderDep, experiments: ExperimentsDep,
    expected_active: Annotated[str | None, Query(
        pattern=VERSION_PATTERN, description="The active version you decided from: 409 if it no longer is.",
    )] = None,
    tenant: TenantParam = None,
) -> Activated:
    """Switch the tenant's search to `version` at once: a promotion, or a rollback to a retired
    version of its lineage (another tenant's search is not touched).
    409 when the version cannot serve, or when another activation, rollback or finishing
    reindex changed the state meanwhile (nothing was switched: look again and decide)."""
    tenant = lineage_of(who, tenant)
    try:
        activation = await activate_version(store.for_tenant(tenant), version, is_served=embedder.ready,
                                            expected_active=expected_active)
    except UnknownVersion as error:
        raise Problem(404, str(error)) from error
    except (ActivationError, ConcurrentChange) as error:
        raise Problem(409, str(error)) from error
    finally:
        experiments.forget_split(tenant)  # an activation may have ended the split
    return Activated(active_version=activation.version, previous_version=activation.previous)
