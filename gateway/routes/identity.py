"""Who the caller's API key is: any valid key, and only about itself."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from gateway.deps import AnyKey

router = APIRouter(prefix="/v1", tags=["keys"])


class Identity(BaseModel):
    key_id: str
    tenant: str
    scopes: list[str] = Field(description="Granted, with the scopes they include.")
    operator: bool = Field(description="May see and act across tenants.")


@router.get("/whoami", response_model=Identity)
async def whoami(who: AnyKey) -> Identity:
    """The key's own id, tenant and scopes (the console shows an operator its tenant selector)."""
    return Identity(key_id=who.key_id, tenant=who.tenant, scopes=sorted(who.scopes), operator=who.operator)
