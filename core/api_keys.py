"""API keys: stored hashed, each bound to one tenant and a set of scopes."""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path

from pydantic import BaseModel

SCOPES = ("publish", "search", "admin")


class ApiKeyRecord(BaseModel):
    key_id: str
    key_sha256: str
    tenant: str
    scopes: list[str]
    # Per-key rate limit; None takes the gateway's default.
    rate_per_s: float | None = None
    burst: int | None = None


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
    """Return the local admin key, creating it (plain text for the CLI, hashed for the gateway)."""
    if key_file.exists():
        return key_file.read_text().strip()
    key = create_key(store, "local-admin", tenant, list(SCOPES))
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.touch(mode=0o600)
    key_file.write_text(key + "\n")
    return key
