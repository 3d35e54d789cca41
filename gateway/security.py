"""API keys (hashed, one tenant and a set of scopes each) and per-key rate limits."""

from __future__ import annotations

import hmac
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.api_keys import ApiKeyRecord, hash_key, load_keys
from core.config import Settings

log = logging.getLogger("flywheel.gateway")


@dataclass(frozen=True)
class Principal:
    key_id: str
    tenant: str
    scopes: frozenset[str]
    rate_per_s: float | None = None
    burst: int | None = None


class KeyRing:
    """The keys the gateway accepts. Keys from the store file (`flywheel keys create|revoke`)
    are re-read when the file changes, checked at most once per `recheck_s`: a new or revoked
    key takes effect without a restart."""

    def __init__(self, records: list[ApiKeyRecord], store: Path | None = None,
                 recheck_s: float = 1.0) -> None:
        self.records = records
        self._store = store
        self._recheck_s = recheck_s
        self._checked = time.monotonic()
        self._stamp = _stamp(store) if store else None

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        if settings.api_keys_json:
            return cls([ApiKeyRecord.model_validate(r) for r in json.loads(settings.api_keys_json)])
        return cls(load_keys(settings.api_key_store), settings.api_key_store)

    def _refresh(self) -> None:
        if self._store is None or time.monotonic() - self._checked < self._recheck_s:
            return
        self._checked = time.monotonic()
        stamp = _stamp(self._store)
        if stamp == self._stamp:
            return
        try:
            self.records = load_keys(self._store)
        except (OSError, ValueError):  # half-written or broken: keep the keys we have
            log.warning("could not re-read the API key store %s", self._store, exc_info=True)
            return
        self._stamp = stamp
        log.info("API keys re-read from %s: %d keys", self._store, len(self.records))

    def authenticate(self, key: str) -> Principal | None:
        self._refresh()
        digest = hash_key(key)
        for record in self.records:
            if hmac.compare_digest(record.key_sha256, digest):
                return Principal(record.key_id, record.tenant, frozenset(record.scopes),
                                 record.rate_per_s, record.burst)
        return None


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class RateLimiter:
    """A token bucket per key: `rate` requests per second, bursts up to `burst`."""

    rate: float
    burst: int
    buckets: dict[str, _Bucket] = field(default_factory=dict)

    def acquire(self, key_id: str, rate: float | None = None, burst: int | None = None) -> float:
        """0 when allowed; otherwise the seconds until a request will be."""
        rate, burst = rate or self.rate, burst or self.burst
        now = time.monotonic()
        bucket = self.buckets.setdefault(key_id, _Bucket(float(burst), now))
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / rate


def retry_after_header(wait_s: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(wait_s)))}
