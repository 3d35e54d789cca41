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


def ensure_local_admin_key(key_file: Path, store: Path, tenant: str = "default") -> str:
    """Return the local admin key, creating it (plain text for the CLI, hashed for the gateway)."""
    if key_file.exists():
        return key_file.read_text().strip()
    key = "fw_" + secrets.token_urlsafe(32)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.touch(mode=0o600)
    key_file.write_text(key + "\n")
    records = [r for r in load_keys(store) if r.key_id != "local-admin"]
    records.append(
        ApiKeyRecord(key_id="local-admin", key_sha256=hash_key(key), tenant=tenant, scopes=list(SCOPES))
    )
    store.write_text(json.dumps([r.model_dump() for r in records], indent=2) + "\n")
    store.chmod(0o600)
    return key
