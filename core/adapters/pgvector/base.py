"""What every part of the vector store shares: the connection pool."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool


class PoolBound:
    """A part of :class:`core.adapters.pgvector.PgVectorStore`, over its connection pool."""

    pool: AsyncConnectionPool
