"""The tenant a request acts for: the key's own, or any tenant an operator key names with
`?tenant=`; a key without the `operator` scope naming another tenant is refused (403)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from gateway.problems import Problem
from gateway.security import Principal
from schemas.envelope import TENANT_PATTERN

TenantQuery = Annotated[str | None, Query(
    pattern=TENANT_PATTERN, max_length=128,
    description="Operator keys: the tenant to act as (default: the key's own). Any other key may "
                "name only its own tenant (403 otherwise).")]


def acting_tenant(who: Principal, tenant: str | None, what: str) -> str:
    """`tenant` when the key may act for it; `what` names the data, for the refusal."""
    if tenant is None or tenant == who.tenant:
        return who.tenant
    if not who.operator:
        raise Problem(403, f"this API key acts for tenant {who.tenant!r} only; another tenant's {what} "
                           "need the 'operator' scope",
                      errors=[{"field": "tenant", "reason": "not the key's tenant"}])
    return tenant
