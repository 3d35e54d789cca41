"""The vector store on PostgreSQL + pgvector, in parts: `schema` (tables, the chunk table of
a version), `versions` (the version lifecycle and the active pointer), `writes` (items and
chunks, reindex support), `queries` (vector, text and exact search), composed in `store`."""

from core.adapters.pgvector.schema import SCHEMA, chunk_table
from core.adapters.pgvector.store import PgVectorStore

__all__ = ["SCHEMA", "PgVectorStore", "chunk_table"]
