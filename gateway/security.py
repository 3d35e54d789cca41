"""API keys (hashed, one tenant and a set of scopes each) and per-key rate limits."""

from __future__ import annotations

import hmac
import json
import math
import time
from dataclasses import dataclass, field

from core.api_keys import ApiKeyRecord, hash_key, load_keys
from core.config import Settings


@dataclass(frozen=True)
class Principal:
    key_id: str
    tenant: str
    scopes: frozenset[str]
    rate_per_s: float | None = None
    burst: int | None = None


class KeyRing:
    def __init__(self, records: list[ApiKeyRecord]) -> None:
        self.records = records

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        if settings.api_keys_json:
            records = [ApiKeyRecord.model_validate(r) for r in json.loads(settings.api_keys_json)]
        else:
            records = load_keys(settings.api_key_store)
        return cls(records)

    def authenticate(self, key: str) -> Principal | None:
        digest = hash_key(key)
        for record in self.records:
            if hmac.compare_digest(record.key_sha256, digest):
                return Principal(record.key_id, record.tenant, frozenset(record.scopes),
                                 record.rate_per_s, record.burst)
        return None


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
