"""The vector store on PostgreSQL + pgvector, in parts: `schema` (tables, the chunk table of
a version), `versions` (each tenant's version lifecycle and active pointer), `writes` (items
and chunks, reindex support), `queries` (vector, text and exact search), composed in `store`;
`tenant`: the store as one tenant sees it."""

from core.adapters.pgvector.schema import SCHEMA, chunk_table
from core.adapters.pgvector.store import PgVectorStore
from core.adapters.pgvector.tenant import TenantStore

__all__ = ["SCHEMA", "PgVectorStore", "TenantStore", "chunk_table"]
