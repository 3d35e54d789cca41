"""Session documents in MongoDB (collection `sessions`), and the training policy's state.

Writes are optimistic: a document carries a `revision`, and a fold is written back with
``replace_one({_id, revision: seen}, ...)`` (or inserted when new: a duplicate key means a
concurrent writer won). Only plain operators are used, so FerretDB and MongoDB behave alike.

Retention: a TTL index on `last_event_at` (`sessions_ttl_days`). FerretDB 1.24 does not
implement TTL indexes (`expireAfterSeconds` answers NotImplemented), so there a plain index
is created instead and :meth:`purge_expired`, which the sessions service runs periodically,
deletes expired sessions itself; on MongoDB both apply and agree.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, AsyncMongoClient
from pymongo.errors import DuplicateKeyError, OperationFailure

from core.sessions import SessionDoc
from schemas.envelope import DEFAULT_TENANT

log = logging.getLogger(__name__)

POLICY_ID = "training-policy"
NOT_IMPLEMENTED = 238


class MongoSessionStore:
    def __init__(self, client: AsyncMongoClient[dict[str, Any]], database: str, ttl_days: int) -> None:
        self.client = client
        self.sessions = client[database]["sessions"]
        self.state = client[database]["flywheel_state"]
        self.ttl = timedelta(days=ttl_days)
        self.ttl_index = False

    @classmethod
    async def connect(cls, uri: str, database: str, ttl_days: int = 90) -> MongoSessionStore:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
        store = cls(client, database, ttl_days)
        await store.ensure_indexes()
        return store

    async def ensure_indexes(self) -> None:
        try:
            await self.sessions.create_index(
                [("last_event_at", ASCENDING)], name="last_event_at_ttl",
                expireAfterSeconds=int(self.ttl.total_seconds()),
            )
            self.ttl_index = True
        except OperationFailure as error:
            if error.code != NOT_IMPLEMENTED:
                raise
            log.warning("the server has no TTL indexes (FerretDB); sessions expire by purge_expired")
            await self.sessions.create_index([("last_event_at", ASCENDING)], name="last_event_at")
        await self.sessions.create_index([("created_at", ASCENDING)], name="created_at")

    async def close(self) -> None:
        await self.client.close()

    # --- sessions --------------------------------------------------------------------------
    async def get(self, key: str) -> SessionDoc | None:
        return await self.sessions.find_one({"_id": key})

    async def get_many(self, keys: Sequence[str]) -> dict[str, SessionDoc]:
        if not keys:
            return {}
        return {doc["_id"]: doc async for doc in self.sessions.find({"_id": {"$in": list(keys)}})}

    async def save(self, doc: SessionDoc, expected_revision: int | None) -> bool:
        new = {**doc, "revision": (expected_revision or 0) + 1}
        if expected_revision is None:
            try:
                await self.sessions.insert_one(new)
            except DuplicateKeyError:
                return False
            return True
        result = await self.sessions.replace_one({"_id": doc["_id"], "revision": expected_revision}, new)
        return result.matched_count == 1

    async def count_created_since(self, since: datetime | None, tenant: str | None = None) -> int:
        query: dict[str, Any] = {} if since is None else {"created_at": {"$gt": since}}
        if tenant is not None:
            query["tenant"] = tenant
        return await self.sessions.count_documents(query)

    async def tenants_since(self, since: datetime) -> list[str]:
        """The tenants with a session whose last event is at or after `since`."""
        found = await self.sessions.distinct("tenant", {"last_event_at": {"$gte": since}})
        return sorted(str(tenant) for tenant in found if tenant)

    def for_tenant(self, tenant: str) -> TenantSessions:
        """The sessions of one tenant (what its training, metrics and policy read)."""
        return TenantSessions(self, tenant)

    async def iter_sessions(
        self, since: datetime | None = None, until: datetime | None = None, batch_size: int = 256,
        tenant: str | None = None,
    ) -> AsyncIterator[SessionDoc]:
        window: dict[str, Any] = {}
        if since is not None:
            window["$gte"] = since
        if until is not None:
            window["$lt"] = until
        query: dict[str, Any] = {"last_event_at": window} if window else {}
        if tenant is not None:
            query["tenant"] = tenant
        # A cursor reads `batch_size` documents per round trip: memory stays bounded.
        cursor = self.sessions.find(query, {"event_ids": 0}).sort("_id", ASCENDING).batch_size(batch_size)
        async for doc in cursor:
            yield doc

    async def purge_expired(self, now: datetime | None = None) -> int:
        cutoff = (now or datetime.now(UTC)) - self.ttl
        result = await self.sessions.delete_many({"last_event_at": {"$lt": cutoff}})
        return result.deleted_count

    # --- training policy -------------------------------------------------------------------
    async def policy_state(self, tenant: str | None = None) -> dict[str, Any]:
        policy_id = _policy_id(tenant)
        return await self.state.find_one({"_id": policy_id}) or {"_id": policy_id, "last_run_id": None,
                                                                  "last_requested_at": None}

    async def claim_policy_run(self, previous_run_id: str | None, run_id: str, at: datetime,
                               tenant: str | None = None) -> bool:
        update = {"$set": {"last_run_id": run_id, "last_requested_at": at}}
        try:
            result = await self.state.update_one(
                {"_id": _policy_id(tenant), "last_run_id": previous_run_id}, update,
                upsert=previous_run_id is None,
            )
        except DuplicateKeyError:
            return False
        return result.matched_count == 1 or result.upserted_id is not None


def _policy_id(tenant: str | None) -> str:
    """The training policy's bookkeeping of a tenant (the default tenant's keeps the old id)."""
    return POLICY_ID if tenant in (None, DEFAULT_TENANT) else f"{POLICY_ID}/{tenant}"


class TenantSessions:
    """One tenant's session documents (core.ports.SessionSource) and its training policy's
    bookkeeping (core.ports.TrainingPolicyStore)."""

    def __init__(self, store: MongoSessionStore, tenant: str) -> None:
        self.store = store
        self.tenant = tenant

    def iter_sessions(
        self, since: datetime | None = None, until: datetime | None = None, batch_size: int = 256
    ) -> AsyncIterator[SessionDoc]:
        return self.store.iter_sessions(since, until, batch_size, tenant=self.tenant)

    async def count_created_since(self, since: datetime | None) -> int:
        return await self.store.count_created_since(since, tenant=self.tenant)

    async def policy_state(self) -> dict[str, Any]:
        return await self.store.policy_state(self.tenant)

    async def claim_policy_run(self, previous_run_id: str | None, run_id: str, at: datetime) -> bool:
        return await self.store.claim_policy_run(previous_run_id, run_id, at, tenant=self.tenant)
