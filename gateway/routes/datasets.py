"""Uploaded judgments per tenant (`/v1/datasets`): labelled data a training run may learn from.

Who may: `admin` for its own tenant's datasets; `operator` for any tenant's (`tenant` in the
body or `?tenant=`). Another tenant's dataset answers 404 to a tenant admin and does not
change; a key without `admin` gets 403. A body is at most FLYWHEEL_GATEWAY_MAX_BODY_BYTES
(413): larger datasets go through `flywheel datasets upload` on the stack's machine.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field

from core.adapters.dataset_store import DatasetExists, DatasetStore
from core.datasets import NAME, DatasetError, DatasetFormat, DatasetRejected, check_name, parse
from gateway.deps import Admin, resources
from gateway.problems import Problem
from gateway.security import Principal

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class DatasetUpload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                      description="The dataset's name, unique in the tenant.")
    format: DatasetFormat = Field(
        default="jsonl", description="`jsonl`: `judgments`; `beir`: `qrels` and `queries`.")
    judgments: str | None = Field(
        default=None, description='JSON Lines of {"query", "item_id", "grade"?, "query_id"?}.')
    qrels: str | None = Field(default=None, description="BEIR qrels: TSV of query-id, corpus-id, score.")
    queries: str | None = Field(default=None, description='BEIR queries: JSON Lines of {"_id", "text"}.')
    tenant: str | None = Field(default=None, pattern=TENANT_PATTERN,
                               description="Operators: the tenant it is for (default: the key's).")


def _tenant(who: Principal, asked: str | None) -> str:
    if asked is None or asked == who.tenant:
        return who.tenant
    if not who.operator:
        raise Problem(403, f"this key acts for tenant {who.tenant!r} only; an operator key may "
                           f"manage tenant {asked!r}'s datasets",
                      errors=[{"field": "tenant", "reason": "not the key's tenant"}])
    return asked


async def _store(request: Request) -> DatasetStore:
    return await resources(request).datasets()


def _named(name: str) -> str:
    """A name no upload could have made is no dataset (and never reaches the store)."""
    if not NAME.fullmatch(name):
        raise Problem(404, f"no dataset {name!r}")
    return name


@router.post("", status_code=status.HTTP_201_CREATED)
async def upload_dataset(body: DatasetUpload, who: Admin, request: Request) -> dict[str, Any]:
    """Validate the judgments line by line and store the valid ones; the answer counts and
    lists the rejects (the first 100) as `flywheel publish` reports them."""
    tenant = _tenant(who, body.tenant)
    try:
        parsed = parse(body.format, body.judgments, body.qrels, body.queries)
    except DatasetRejected as error:
        field = "judgments" if body.format == "jsonl" else "qrels"
        raise Problem(422, str(error), errors=[
            {"field": reject.file or field, "line": reject.line, "reason": reject.reason}
            for reject in error.parsed.rejects[:100]]) from error
    except DatasetError as error:
        field = str(error).split(":", 1)[0]
        raise Problem(422, str(error), errors=[{"field": field, "reason": str(error)}]) from error
    try:
        dataset = await (await _store(request)).create(tenant, check_name(body.name), body.format, parsed)
    except DatasetExists as error:
        raise Problem(409, str(error), errors=[{"field": "name", "reason": "taken"}]) from error
    return dataset


@router.get("")
async def list_datasets(
    who: Admin, request: Request,
    tenant: str | None = Query(default=None, pattern=TENANT_PATTERN, description="Operators: one tenant's."),
) -> list[dict[str, Any]]:
    asked = _tenant(who, tenant) if tenant else (None if who.operator else who.tenant)
    return await (await _store(request)).list(asked)


@router.get("/{name}")
async def show_dataset(
    name: str, who: Admin, request: Request,
    tenant: str | None = Query(default=None, pattern=TENANT_PATTERN, description="Operators: the tenant."),
    sample: int = Query(default=10, ge=0, le=100, description="How many judgments to show."),
) -> dict[str, Any]:
    found = await (await _store(request)).get(_tenant(who, tenant), _named(name), sample)
    if found is None:
        raise Problem(404, f"no dataset {name!r}")
    return found


@router.delete("/{name}")
async def delete_dataset(
    name: str, who: Admin, request: Request,
    tenant: str | None = Query(default=None, pattern=TENANT_PATTERN, description="Operators: the tenant."),
) -> dict[str, Any]:
    owner = _tenant(who, tenant)
    if not await (await _store(request)).delete(owner, _named(name)):
        raise Problem(404, f"no dataset {name!r}")
    return {"name": name, "tenant": owner, "deleted": True}
