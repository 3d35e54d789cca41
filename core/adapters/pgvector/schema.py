"""The vector store's tables on PostgreSQL + pgvector.

- `items`: one row per (tenant, id) with title, text, metadata, version; a generated
  tsvector over title and text, whose terms BM25 ranks for hybrid search (`bm25_postings`
  and `bm25_stats`, kept by triggers on `items`: see `bm25`).
- `chunks_v<version>`: one table per model version (tenant, item_id, chunk_no, metadata,
  embedding) with an HNSW cosine index. Metadata is copied onto chunks so that filters run
  inside the index scan (pgvector 0.8 iterative scans keep returning rows until k match).
  A version's table holds the items of the tenants that serve it, build it or can roll back
  to it (the base version's table is shared by every tenant on it).
- `model_versions` (version, dim, `owner`: the tenant whose sessions trained it, null for the
  shared base model and versions from before tenants had lineages): the catalogue.
- Each tenant's model lineage: `tenant_versions` (tenant, version, status
  building|active|retired|failed, the reason of a failure), `tenant_active` (the pointer
  search follows for the tenant; switching it is one UPDATE) and `tenant_ab_split` (the
  tenant's A/B split; an ended split keeps its row with when and why it ended). Tenant
  NEW_TENANTS (`*`) holds what a tenant without a lineage of its own serves.

A database from before lineages (global `active_model`, `ab_split`, status in
`model_versions`) migrates in place: every tenant with items, and `*`, starts with the
global state (its versions, active version, rollback target and split).

Every change of the rollout state (an active pointer, a version's status, a split) takes
the transaction-scoped advisory lock ROLLOUT_LOCK first and checks, under it, the state it was
decided from (see core.domain.Expected), so concurrent changes serialise and a stale one is
refused instead of applied.
"""

from __future__ import annotations

import re

from psycopg import sql

from core.adapters.pgvector.bm25 import BM25_SCHEMA

SPLIT_SCHEMA = """
CREATE TABLE IF NOT EXISTS tenant_ab_split (
    tenant text PRIMARY KEY,
    candidate_version text NOT NULL,
    percent double precision NOT NULL CHECK (percent >= 0 AND percent <= 100),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- A split is in force while ended_at is null; an ended one says when and why.
    ended_at timestamptz,
    end_reason text
);
"""

# From one global rollout state to a lineage per tenant, once (the old columns go with it).
MIGRATION = """
DO $$ BEGIN
    IF EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_name = 'model_versions' AND column_name = 'status') THEN
        CREATE TEMPORARY TABLE lineage_tenants ON COMMIT DROP AS
            SELECT DISTINCT tenant FROM items UNION SELECT '*';
        INSERT INTO tenant_versions (tenant, version, status, created_at, activated_at, retired_at, reason)
            SELECT t.tenant, v.version, v.status, v.created_at, v.activated_at, v.retired_at, v.reason
            FROM lineage_tenants t CROSS JOIN model_versions v
            ON CONFLICT DO NOTHING;
        IF to_regclass('active_model') IS NOT NULL THEN
            INSERT INTO tenant_active (tenant, version)
                SELECT t.tenant, a.version FROM lineage_tenants t CROSS JOIN active_model a
                ON CONFLICT DO NOTHING;
            DROP TABLE active_model;
        END IF;
        IF to_regclass('ab_split') IS NOT NULL THEN
            INSERT INTO tenant_ab_split (tenant, candidate_version, percent, updated_at, ended_at, end_reason)
                SELECT t.tenant, s.candidate_version, s.percent, s.updated_at, s.ended_at, s.end_reason
                FROM lineage_tenants t CROSS JOIN ab_split s
                ON CONFLICT DO NOTHING;
            DROP TABLE ab_split;
        END IF;
        ALTER TABLE model_versions DROP CONSTRAINT IF EXISTS model_versions_status_check;
        ALTER TABLE model_versions DROP COLUMN status, DROP COLUMN IF EXISTS activated_at,
            DROP COLUMN IF EXISTS retired_at, DROP COLUMN IF EXISTS reason;
    END IF;
END $$;
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
    created_at timestamptz NOT NULL DEFAULT now()
);
-- The tenant whose sessions trained the version; null: shared (the base model, or trained
-- before tenants had lineages).
ALTER TABLE model_versions ADD COLUMN IF NOT EXISTS owner text;
-- The vector ranking's share of the version's hybrid score, chosen by its training run on
-- held-out queries (core.training.evaluation); null: core.fusion.VECTOR_WEIGHT.
ALTER TABLE model_versions ADD COLUMN IF NOT EXISTS fusion_weight double precision
    CHECK (fusion_weight BETWEEN 0 AND 1);
CREATE TABLE IF NOT EXISTS tenant_versions (
    tenant text NOT NULL,
    version text NOT NULL REFERENCES model_versions (version),
    status text NOT NULL CHECK (status IN ('building', 'active', 'retired', 'failed')),
    created_at timestamptz NOT NULL DEFAULT now(),
    activated_at timestamptz,
    -- When the version last stopped being the tenant's newest complete one (retired by an
    -- activation, or finished without one): the version retired last is the rollback target.
    retired_at timestamptz,
    -- Why the version has its status, when that needs saying (a failed reindex).
    reason text,
    PRIMARY KEY (tenant, version)
);
CREATE TABLE IF NOT EXISTS tenant_active (
    tenant text PRIMARY KEY,
    version text NOT NULL REFERENCES model_versions (version)
);
""" + SPLIT_SCHEMA + MIGRATION + BM25_SCHEMA

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
