"""API keys: stored hashed, each bound to one tenant and a set of scopes.

Scopes (docs/api.md says exactly which routes each opens):

- ``search``: search, read the tenant's tasks and models;
- ``publish``: write the tenant's content and clicks;
- ``admin``: the tenant's own operations (training, activation, rollback, reindex, A/B
  split, its own dead letters and item counts); includes ``search`` and ``publish``;
- ``operator``: the platform, across tenants (component status, topic lag, every tenant's
  counts and dead letters); includes ``admin`` for the key's own tenant.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from schemas.envelope import TENANT_PATTERN

SCOPES = ("publish", "search", "admin", "operator")
# What each scope includes besides itself.
IMPLIED: dict[str, frozenset[str]] = {
    "admin": frozenset({"search", "publish"}),
    "operator": frozenset({"admin", "search", "publish"}),
}


def granted(scopes: list[str] | frozenset[str]) -> frozenset[str]:
    """The scopes a key holds: the ones it lists and those they include."""
    result = set(scopes)
    for scope in scopes:
        result |= IMPLIED.get(scope, frozenset())
    return frozenset(result)


class ApiKeyRecord(BaseModel):
    key_id: str = Field(min_length=1, max_length=128)
    key_sha256: str
    # The same rule as the envelope's `tenant`: a key's tenant is what its events carry.
    tenant: str = Field(min_length=1, max_length=128, pattern=TENANT_PATTERN)
    scopes: list[str] = Field(min_length=1)
    # Per-key rate limit; None takes the gateway's default. 0 is refused: to block a key,
    # revoke it.
    rate_per_s: float | None = Field(default=None, gt=0)
    burst: int | None = Field(default=None, ge=1)

    @field_validator("scopes")
    @classmethod
    def _known_scopes(cls, scopes: list[str]) -> list[str]:
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown:
            raise ValueError(f"unknown scopes {', '.join(unknown)}; scopes are {', '.join(SCOPES)}")
        return scopes


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def load_keys(path: Path) -> list[ApiKeyRecord]:
    if not path.exists():
        return []
    return [ApiKeyRecord.model_validate(item) for item in json.loads(path.read_text())]


def new_key() -> str:
    return "fw_" + secrets.token_urlsafe(32)


def save_keys(store: Path, records: list[ApiKeyRecord]) -> None:
    """Write the store atomically (a gateway may be reading it) and readable by its owner only."""
    store.parent.mkdir(parents=True, exist_ok=True)
    staging = store.with_name(store.name + ".tmp")
    staging.touch(mode=0o600)
    staging.write_text(json.dumps([r.model_dump() for r in records], indent=2) + "\n")
    staging.replace(store)


def create_key(
    store: Path, key_id: str, tenant: str, scopes: list[str],
    rate_per_s: float | None = None, burst: int | None = None,
) -> str:
    """Add a key (replacing one with the same id) and return it in plain text: only its hash
    is kept, so this is the one time it can be read."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)}; got {', '.join(scopes) or 'none'}")
    if not re.fullmatch(TENANT_PATTERN, tenant) or len(tenant) > 128:
        raise ValueError(f"tenant {tenant!r}: letters, digits, '.', '_' and '-', starting with a letter "
                         "or digit, at most 128 characters (the rule events' `tenant` follows)")
    if rate_per_s is not None and not rate_per_s > 0:
        raise ValueError(f"rate: must be more than 0 requests/s, not {rate_per_s}; "
                         "to block a key, revoke it (flywheel keys revoke)")
    if burst is not None and burst < 1:
        raise ValueError(f"burst: must be at least 1, not {burst}")
    key = new_key()
    records = [r for r in load_keys(store) if r.key_id != key_id]
    records.append(ApiKeyRecord(key_id=key_id, key_sha256=hash_key(key), tenant=tenant, scopes=scopes,
                                rate_per_s=rate_per_s, burst=burst))
    save_keys(store, records)
    return key


def revoke_key(store: Path, key_id: str) -> bool:
    """Remove a key; False when there was none with this id."""
    records = load_keys(store)
    kept = [r for r in records if r.key_id != key_id]
    if len(kept) == len(records):
        return False
    save_keys(store, kept)
    return True


def ensure_local_admin_key(key_file: Path, store: Path, tenant: str = "default") -> str:
    """Return the local admin key, creating it (plain text for the CLI, hashed for the gateway).
    It holds every scope, `operator` included: the stack's owner sees every tenant."""
    if key_file.exists():
        key = key_file.read_text().strip()
        records = load_keys(store)
        mine = [r for r in records if r.key_id == "local-admin" and r.key_sha256 == hash_key(key)]
        if mine and set(mine[0].scopes) != set(SCOPES):  # written before a scope was added
            mine[0].scopes = list(SCOPES)
            save_keys(store, records)
        return key
    key = create_key(store, "local-admin", tenant, list(SCOPES))
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.touch(mode=0o600)
    key_file.write_text(key + "\n")
    return key
