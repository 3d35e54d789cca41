"""The vector store: one connection pool, composed of the version lifecycle, writes and
queries, and seen by one tenant through `for_tenant` (see the sibling modules; the tables are in `schema`)."""

from __future__ import annotations

from pgvector.psycopg import register_vector_async
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from core.adapters.pgvector.queries import Queries
from core.adapters.pgvector.schema import SCHEMA
from core.adapters.pgvector.tenant import TenantStore
from core.adapters.pgvector.versions import VersionLifecycle
from core.adapters.pgvector.writes import Writes


async def _configure(conn: AsyncConnection) -> None:
    await register_vector_async(conn)


class PgVectorStore(VersionLifecycle, Writes, Queries):
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    @classmethod
    async def connect(cls, dsn: str, max_size: int = 10, statement_timeout_ms: int = 0) -> PgVectorStore:
        """A pool of connections to `dsn`; with `statement_timeout_ms`, each of its statements
        (lock waits included) is cancelled past that many milliseconds (QueryCanceled)."""
        # The extension must exist before connections register the vector type.
        async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        options = {}
        if statement_timeout_ms:
            given = conninfo_to_dict(dsn).get("options") or ""
            options["options"] = f"{given} -c statement_timeout={statement_timeout_ms}".strip()
        pool = AsyncConnectionPool(dsn, min_size=1, max_size=max_size, configure=_configure, open=False,
                                   kwargs=options)
        await pool.open(wait=True, timeout=30)
        store = cls(pool)
        await store.ensure_schema()
        return store

    def for_tenant(self, tenant: str) -> TenantStore:
        """The store as one tenant sees it: its model lineage and its items."""
        return TenantStore(self, tenant)

    async def close(self) -> None:
        await self.pool.close()

    async def ensure_schema(self) -> None:
        async with self.pool.connection() as conn:
            # Serialise concurrent first starts of several services.
            await conn.execute("SELECT pg_advisory_xact_lock(7110)")
            await conn.execute(SCHEMA)
