"""Sources: database tables captured by Debezium into content (core.sources).

Who may use them: a tenant's `admin` key adds, lists, shows and removes its own tenant's
sources (a source's tenant is the key's); an `operator` key does so for any tenant. Another
tenant's source answers 404, as if it did not exist. The DSN's password is never shown.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, status

from core.ports import DependencyUnavailable
from core.source_admin import SourceAdmin, SourceExists, UnknownSource
from core.sources import SourceError, SourceSpec
from gateway.bodies import SourceRequest
from gateway.deps import Admin, resources
from gateway.problems import Problem
from gateway.security import Principal

router = APIRouter(prefix="/v1/sources", tags=["sources"])


async def _admin(request: Request) -> SourceAdmin:
    return await resources(request).sources()


def _tenant(who: Principal, asked: str | None) -> str | None:
    """The tenant a call may act on: its own, or (operator) the one asked for, or every one."""
    if who.operator:
        return asked
    if asked is not None and asked != who.tenant:
        raise Problem(403, f"this key acts for tenant {who.tenant!r} only; an operator key may "
                           f"manage tenant {asked!r}'s sources")
    return who.tenant


async def _call(work: Any) -> Any:
    try:
        return await work
    except SourceExists as error:
        raise Problem(409, str(error)) from error
    except SourceError as error:
        raise Problem(422, str(error)) from error
    except UnknownSource as error:
        raise Problem(404, str(error.args[0])) from error
    except DependencyUnavailable as error:
        raise Problem(503, str(error), headers={"Retry-After": "5"}) from error


@router.post("", status_code=status.HTTP_201_CREATED)
async def add_source(body: SourceRequest, who: Admin, request: Request) -> dict[str, Any]:
    """Capture a table: a snapshot of its rows, then every insert, update and delete."""
    tenant = _tenant(who, body.tenant) or who.tenant
    try:
        spec = SourceSpec(**body.model_dump(exclude={"tenant"}), tenant=tenant)
    except (ValueError, SourceError) as error:
        raise Problem(422, str(error)) from error
    return await _call((await _admin(request)).add(spec))  # type: ignore[no-any-return]


@router.get("")
async def list_sources(
    who: Admin, request: Request,
    tenant: str | None = Query(default=None, description="Operators: one tenant's sources."),
) -> list[dict[str, Any]]:
    return await _call((await _admin(request)).list_sources(_tenant(who, tenant)))  # type: ignore[no-any-return]


@router.get("/{name}")
async def show_source(name: str, who: Admin, request: Request) -> dict[str, Any]:
    return await _call((await _admin(request)).show(name, _tenant(who, None)))  # type: ignore[no-any-return]


@router.delete("/{name}")
async def remove_source(
    name: str, who: Admin, request: Request,
    delete_items: bool = Query(default=False, description="Also delete the items it indexed."),
) -> dict[str, Any]:
    """Stop capturing; the items stay unless `delete_items=true`."""
    admin = await _admin(request)
    return await _call(admin.remove(name, delete_items, _tenant(who, None)))  # type: ignore[no-any-return]
