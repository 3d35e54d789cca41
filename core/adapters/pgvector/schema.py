"""The vector store's tables on PostgreSQL + pgvector.

- `items`: one row per (tenant, id) with title, text, metadata, version; a generated
  tsvector over title and text for hybrid search.
- `chunks_v<version>`: one table per model version (tenant, item_id, chunk_no, metadata,
  embedding) with an HNSW cosine index. Metadata is copied onto chunks so that filters run
  inside the index scan (pgvector 0.8 iterative scans keep returning rows until k match).
- `model_versions` (version, dim, status building|active|retired) and `active_model`, the
  pointer that search follows; switching it is one UPDATE.
"""

from __future__ import annotations

import re

from psycopg import sql

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE IF NOT EXISTS items (
    tenant text NOT NULL,
    id text NOT NULL,
    title text NOT NULL DEFAULT '',
    text text NOT NULL DEFAULT '',
    metadata jsonb NOT NULL DEFAULT '{}',
    version bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    tsv tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', coalesce(title, '')), 'A')
        || setweight(to_tsvector('english', coalesce(text, '')), 'B')
    ) STORED,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX IF NOT EXISTS items_tsv_idx ON items USING gin (tsv);
CREATE INDEX IF NOT EXISTS items_metadata_idx ON items USING gin (metadata jsonb_path_ops);
CREATE TABLE IF NOT EXISTS model_versions (
    version text PRIMARY KEY,
    dim integer NOT NULL,
    status text NOT NULL CHECK (status IN ('building', 'active', 'retired')),
    created_at timestamptz NOT NULL DEFAULT now(),
    activated_at timestamptz
);
-- When a version last stopped being the newest complete one (retired by an activation, or
-- finished without one): the version retired last is the rollback target kept current.
ALTER TABLE model_versions ADD COLUMN IF NOT EXISTS retired_at timestamptz;
CREATE TABLE IF NOT EXISTS active_model (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version text NOT NULL REFERENCES model_versions (version)
);
"""

_VERSION_RE = re.compile(r"^[0-9]+$")


def chunk_table(version: str) -> sql.Identifier:
    if not _VERSION_RE.match(version):
        raise ValueError(f"model versions are numeric, not {version!r}")
    return sql.Identifier(f"chunks_v{version}")


def chunk_table_ddl(version: str, dim: int) -> list[sql.Composed]:
    """The statements that create the chunk table of a model version and its HNSW index."""
    table = chunk_table(version)
    return [
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {t} ("
            " tenant text NOT NULL, item_id text NOT NULL, chunk_no integer NOT NULL,"
            " item_version bigint NOT NULL,"
            " metadata jsonb NOT NULL DEFAULT '{{}}', embedding vector({dim}) NOT NULL,"
            " PRIMARY KEY (tenant, item_id, chunk_no))"
        ).format(t=table, dim=sql.Literal(dim)),
        sql.SQL(
            "CREATE INDEX IF NOT EXISTS {i} ON {t} USING hnsw (embedding vector_cosine_ops)"
        ).format(i=sql.Identifier(f"chunks_v{version}_hnsw"), t=table),
    ]
