"""API keys and the per-key token bucket."""

from __future__ import annotations

from core.api_keys import ApiKeyRecord, ensure_local_admin_key, hash_key, load_keys
from gateway.security import KeyRing, RateLimiter


def test_keys_are_stored_hashed_and_authenticate(tmp_path) -> None:  # type: ignore[no-untyped-def]
    key = ensure_local_admin_key(tmp_path / "api-key", tmp_path / "keys.json")
    assert key not in (tmp_path / "keys.json").read_text()
    ring = KeyRing(load_keys(tmp_path / "keys.json"))
    principal = ring.authenticate(key)
    assert principal is not None and principal.tenant == "default" and "admin" in principal.scopes
    assert ring.authenticate(key + "x") is None
    assert ensure_local_admin_key(tmp_path / "api-key", tmp_path / "keys.json") == key


def test_token_bucket_allows_burst_then_asks_to_wait() -> None:
    limiter = RateLimiter(rate=1.0, burst=3)
    assert [limiter.acquire("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.acquire("k")
    assert 0 < wait <= 1.0
    assert limiter.acquire("other") == 0.0


def test_per_key_limits_override_the_default() -> None:
    ring = KeyRing([ApiKeyRecord(key_id="slow", key_sha256=hash_key("s"), tenant="t",
                                 scopes=["search"], rate_per_s=0.5, burst=1)])
    principal = ring.authenticate("s")
    assert principal is not None
    limiter = RateLimiter(rate=100, burst=100)
    assert limiter.acquire(principal.key_id, principal.rate_per_s, principal.burst) == 0.0
    assert limiter.acquire(principal.key_id, principal.rate_per_s, principal.burst) > 1.0
