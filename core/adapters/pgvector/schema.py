"""The vector store's tables on PostgreSQL + pgvector.

- `items`: one row per (tenant, id) with title, text, metadata, version; a generated
  tsvector over title and text for hybrid search.
- `chunks_v<version>`: one table per model version (tenant, item_id, chunk_no, metadata,
  embedding) with an HNSW cosine index. Metadata is copied onto chunks so that filters run
  inside the index scan (pgvector 0.8 iterative scans keep returning rows until k match).
- `model_versions` (version, dim, status building|active|retired|failed, the reason of a
  failure) and `active_model`, the pointer that search follows; switching it is one UPDATE.
- `ab_split`: the A/B split of search traffic (one row); a split that was ended keeps its row
  with when and why it ended.

Every change of the rollout state (the active pointer, a version's status, the split) takes
the transaction-scoped advisory lock ROLLOUT_LOCK first and checks, under it, the state it was
decided from (see core.domain.Expected), so concurrent changes serialise and a stale one is
refused instead of applied.
"""

from __future__ import annotations

import re

from psycopg import sql

SPLIT_SCHEMA = """
CREATE TABLE IF NOT EXISTS ab_split (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    candidate_version text NOT NULL,
    percent double precision NOT NULL CHECK (percent >= 0 AND percent <= 100),
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- A split is in force while ended_at is null; an ended one says when and why.
ALTER TABLE ab_split ADD COLUMN IF NOT EXISTS ended_at timestamptz;
ALTER TABLE ab_split ADD COLUMN IF NOT EXISTS end_reason text;
"""

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
-- A deleted item's last version: an upsert not newer than it (replayed from another partition,
-- or redelivered late) is ignored, so a delete survives any replay order.
CREATE TABLE IF NOT EXISTS deleted_items (
    tenant text NOT NULL,
    id text NOT NULL,
    version bigint NOT NULL,
    deleted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, id)
);
CREATE INDEX IF NOT EXISTS items_metadata_idx ON items USING gin (metadata jsonb_path_ops);
CREATE TABLE IF NOT EXISTS model_versions (
    version text PRIMARY KEY,
    dim integer NOT NULL,
    status text NOT NULL CHECK (status IN ('building', 'active', 'retired', 'failed')),
    created_at timestamptz NOT NULL DEFAULT now(),
    activated_at timestamptz
);
-- When a version last stopped being the newest complete one (retired by an activation, or
-- finished without one): the version retired last is the rollback target kept current.
ALTER TABLE model_versions ADD COLUMN IF NOT EXISTS retired_at timestamptz;
-- Why a version has its status, when that needs saying (a failed reindex).
ALTER TABLE model_versions ADD COLUMN IF NOT EXISTS reason text;
DO $$ BEGIN
    -- Databases created before versions could fail: allow the status.
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'model_versions_status_check'
                   AND pg_get_constraintdef(oid) LIKE '%failed%') THEN
        ALTER TABLE model_versions DROP CONSTRAINT IF EXISTS model_versions_status_check;
        ALTER TABLE model_versions ADD CONSTRAINT model_versions_status_check
            CHECK (status IN ('building', 'active', 'retired', 'failed'));
    END IF;
END $$;
CREATE TABLE IF NOT EXISTS active_model (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version text NOT NULL REFERENCES model_versions (version)
);
""" + SPLIT_SCHEMA

# pg_advisory_xact_lock key taken by every change of the rollout state.
ROLLOUT_LOCK = 7112
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
