"""API keys (hashed, one tenant and a set of scopes each) and per-key rate limits.

Rate limits are token buckets, one per key. By default they live in PostgreSQL
(`gateway_rate_buckets`), so every gateway process takes from the same bucket: N replicas
allow the key's rate, not N times it. One atomic `INSERT ... ON CONFLICT DO UPDATE ...
RETURNING` per request refills and takes a token. While PostgreSQL cannot be reached the
gateway falls back to a bucket in its own memory (and says so in its log).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from core.api_keys import ApiKeyRecord, granted, hash_key, load_keys
from core.config import Settings

log = logging.getLogger("flywheel.gateway")


@dataclass(frozen=True)
class Principal:
    key_id: str
    tenant: str
    scopes: frozenset[str]  # as granted: the key's scopes and those they include
    rate_per_s: float | None = None
    burst: int | None = None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes

    @property
    def operator(self) -> bool:
        """May see and act across tenants."""
        return "operator" in self.scopes


class KeyRing:
    """The keys the gateway accepts. Keys from the store file (`flywheel keys create|revoke`)
    are re-read when the file changes, checked every `recheck_s` by :meth:`watch` in a worker
    thread: a new or revoked key takes effect without a restart, and authenticating a request
    touches only memory (no file system call on the event loop)."""

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

    async def watch(self) -> None:
        """Re-read the store whenever it changes, until cancelled (the gateway's lifespan)."""
        if self._store is None:
            return
        while True:
            await asyncio.sleep(self._recheck_s)
            await asyncio.to_thread(self.refresh)

    def refresh(self) -> None:
        """Re-read the store if it changed since the last look (blocking: a stat and a read)."""
        if self._store is None:
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
        digest = hash_key(key)
        for record in self.records:
            if hmac.compare_digest(record.key_sha256, digest):
                return Principal(record.key_id, record.tenant, granted(record.scopes),
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
        rate = self.rate if rate is None else rate
        burst = self.burst if burst is None else burst
        now = time.monotonic()
        bucket = self.buckets.setdefault(key_id, _Bucket(float(burst), now))
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / rate


RATE_TABLE = """
CREATE TABLE IF NOT EXISTS gateway_rate_buckets (
    key_id  text PRIMARY KEY,
    tokens  double precision NOT NULL,
    updated timestamptz NOT NULL,
    allowed boolean NOT NULL
)
"""
# Refill by the time since the last request (the database's clock, so every replica agrees),
# cap at the burst, and take one token if there is one. The row lock of the upsert makes
# concurrent requests of one key, from any process, take their turns.
_REFILLED = "LEAST(%(burst)s, b.tokens + GREATEST(0, EXTRACT(EPOCH FROM now() - b.updated)) * %(rate)s)"
TAKE_TOKEN = f"""
INSERT INTO gateway_rate_buckets AS b (key_id, tokens, updated, allowed)
VALUES (%(key)s, %(burst)s - 1, now(), true)
ON CONFLICT (key_id) DO UPDATE SET
    tokens = CASE WHEN {_REFILLED} >= 1 THEN {_REFILLED} - 1 ELSE {_REFILLED} END,
    allowed = {_REFILLED} >= 1,
    updated = now()
RETURNING allowed, tokens
"""


class SharedRateLimiter:
    """Token buckets in PostgreSQL, shared by every gateway process; `fallback` (in memory)
    while the database is unreachable or slower than `timeout_s` (then for `retry_s`): a
    PostgreSQL outage never holds up requests that do not need it. Opening the connection
    pool goes on in the background meanwhile (the requests until it is open use `fallback`)."""

    def __init__(self, pool: Callable[[], Awaitable[Any]], fallback: RateLimiter,
                 retry_s: float = 5.0, timeout_s: float = 1.0) -> None:
        self._pool = pool
        self.fallback = fallback
        self._retry_s = retry_s
        self._timeout_s = timeout_s
        self._ready = False
        self._down_until = 0.0
        self._opening: asyncio.Task[Any] | None = None

    async def acquire(self, key_id: str, rate: float | None = None, burst: int | None = None) -> float:
        """0 when allowed; otherwise the seconds until a request will be."""
        rate = self.fallback.rate if rate is None else rate
        burst = self.fallback.burst if burst is None else burst
        if time.monotonic() < self._down_until:
            return self.fallback.acquire(key_id, rate, burst)
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._pool())
        try:
            pool = await asyncio.wait_for(asyncio.shield(self._opening), self._timeout_s)
            row = await asyncio.wait_for(self._take(pool, key_id, rate, burst), self._timeout_s)
        except Exception as error:
            if isinstance(error, TimeoutError) and not self._opening.done():
                return self.fallback.acquire(key_id, rate, burst)  # still opening: not down
            if self._opening.done() and self._opening.exception() is not None:
                self._opening = None  # try to open it afresh after retry_s
            log.warning("rate limits in this process only for %.0f s: PostgreSQL: %r", self._retry_s, error)
            self._down_until = time.monotonic() + self._retry_s
            return self.fallback.acquire(key_id, rate, burst)
        allowed, tokens = bool(row[0]), float(row[1])
        return 0.0 if allowed else (1 - tokens) / rate

    async def _take(self, pool: Any, key_id: str, rate: float, burst: int) -> Any:
        if not self._ready:
            await self._create_table(pool)
        async with pool.connection() as conn:
            cursor = await conn.execute(TAKE_TOKEN, {"key": key_id, "rate": rate, "burst": burst})
            return await cursor.fetchone()

    async def _create_table(self, pool: Any) -> None:
        try:
            async with pool.connection() as conn:
                await conn.execute(RATE_TABLE)
        except psycopg.errors.UniqueViolation:  # another gateway created it at the same moment
            pass
        self._ready = True


def retry_after_header(wait_s: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(wait_s)))}
