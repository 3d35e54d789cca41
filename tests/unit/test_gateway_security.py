"""API keys and the per-key token bucket."""

from __future__ import annotations

from typing import Any

import pytest

from core.api_keys import ApiKeyRecord, create_key, ensure_local_admin_key, hash_key, load_keys, revoke_key
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


def test_a_ring_on_the_store_sees_keys_created_and_revoked_without_a_restart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = tmp_path / "keys.json"
    ring = KeyRing(load_keys(store), store, recheck_s=0.0)
    key = create_key(store, "reader", "acme", ["search"], rate_per_s=5)
    assert ring.authenticate(key) is None  # not before the store is looked at again
    ring.refresh()  # what the gateway's watcher does every second, off the event loop
    principal = ring.authenticate(key)
    assert principal is not None and principal.tenant == "acme" and principal.scopes == {"search"}
    assert principal.rate_per_s == 5
    assert oct(store.stat().st_mode & 0o777) == "0o600"
    replacement = create_key(store, "reader", "acme", ["search", "publish"])
    ring.refresh()
    assert ring.authenticate(key) is None and ring.authenticate(replacement) is not None
    assert revoke_key(store, "reader") and not revoke_key(store, "reader")
    ring.refresh()
    assert ring.authenticate(replacement) is None


def test_a_ring_keeps_its_keys_when_the_store_turns_unreadable(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = tmp_path / "keys.json"
    key = create_key(store, "writer", "acme", ["publish"])
    ring = KeyRing(load_keys(store), store, recheck_s=0.0)
    store.write_text("[{not json")
    ring.refresh()
    assert ring.authenticate(key) is not None


def test_unknown_scopes_are_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="scopes must be some of"):
        create_key(tmp_path / "keys.json", "k", "t", ["read"])
    with pytest.raises(ValueError):
        create_key(tmp_path / "keys.json", "k", "t", [])


@pytest.mark.parametrize("tenant", ["", "-x", "a b", "a/b", "ténant", "x" * 129, "../etc"])
def test_a_key_for_a_tenant_name_events_would_refuse_is_refused(tmp_path, tenant: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="tenant"):
        create_key(tmp_path / "keys.json", "k", tenant, ["search"])
    assert load_keys(tmp_path / "keys.json") == []


def test_a_rate_of_zero_is_refused_with_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=r"more than 0 requests/s.*revoke"):
        create_key(tmp_path / "keys.json", "k", "acme", ["search"], rate_per_s=0)
    with pytest.raises(ValueError, match="burst"):
        create_key(tmp_path / "keys.json", "k", "acme", ["search"], burst=0)
    # A store edited by hand with rate 0 does not load (the gateway says why, not ignore it).
    with pytest.raises(ValueError, match="rate_per_s"):
        ApiKeyRecord(key_id="k", key_sha256="x", tenant="acme", scopes=["search"], rate_per_s=0)


def test_scopes_include_only_what_they_say() -> None:
    ring = KeyRing([ApiKeyRecord(key_id=name, key_sha256=hash_key(name), tenant="t", scopes=[name])
                    for name in ("search", "publish", "admin", "operator")])
    granted = {name: (p := ring.authenticate(name)) and p.scopes for name in ("search", "publish", "admin",
                                                                             "operator")}
    assert granted == {"search": {"search"}, "publish": {"publish"},
                       "admin": {"admin", "search", "publish"},
                       "operator": {"operator", "admin", "search", "publish"}}


def test_the_local_key_spans_tenants_and_an_older_one_is_upgraded(tmp_path) -> None:  # type: ignore[no-untyped-def]
    key_file, store = tmp_path / "api-key", tmp_path / "keys.json"
    key = ensure_local_admin_key(key_file, store)
    [record] = load_keys(store)
    assert "operator" in record.scopes
    record.scopes = ["publish", "search", "admin"]  # as written before `operator` existed
    from core.api_keys import save_keys
    save_keys(store, [record])
    assert ensure_local_admin_key(key_file, store) == key
    assert "operator" in load_keys(store)[0].scopes


async def test_the_shared_limiter_falls_back_to_memory_while_postgresql_is_down() -> None:
    import asyncio
    import time

    from gateway.security import SharedRateLimiter

    async def refusing_pool() -> None:
        raise OSError("connection refused")

    refused = SharedRateLimiter(refusing_pool, RateLimiter(rate=1.0, burst=2), retry_s=30, timeout_s=0.2)
    assert [await refused.acquire("k") for _ in range(2)] == [0.0, 0.0]
    assert await refused.acquire("k") > 0  # the in-memory bucket still limits

    class HangingPool:
        def connection(self) -> Any:
            return self

        async def __aenter__(self) -> None:
            await asyncio.sleep(60)  # PostgreSQL stopped answering

        async def __aexit__(self, *exc: object) -> None:
            pass

    async def slow_then_hanging_pool() -> HangingPool:
        await asyncio.sleep(0.5)  # opening takes longer than the timeout: not an outage
        return HangingPool()

    limiter = SharedRateLimiter(slow_then_hanging_pool, RateLimiter(rate=100.0, burst=100), retry_s=30,
                                timeout_s=0.2)
    limiter._ready = True
    began = time.monotonic()
    assert await limiter.acquire("k") == 0.0 and limiter._down_until == 0.0  # still opening
    await asyncio.sleep(0.5)
    assert await limiter.acquire("k") == 0.0 and limiter._down_until > 0  # open, but no answer
    assert await limiter.acquire("k") == 0.0 and time.monotonic() - began < 2
