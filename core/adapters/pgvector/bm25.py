"""BM25 inside PostgreSQL: the lexical ranking of hybrid search.

Terms are the lexemes of the item's `tsv` (PostgreSQL's `english` text search configuration
over title and text: lower-cased, stemmed, stop words removed), so documents and queries are
analysed alike. Kept by triggers on `items`, in the same transaction as every write:

- `bm25_postings` (tenant, term, item_id, tf, doc_len): one row per term of an item, with the
  term's count in the item and the item's length (its terms counted with repetition);
- `bm25_stats` (tenant, docs, length): per tenant, rows whose sums are the number of items and
  their total length. Each write statement adds a row of its changes (so concurrent writers
  never wait on one hot row, nor deadlock over several tenants' rows), and a write that finds
  COMPACT_EVERY rows of its tenant folds them into one.

Document frequencies are counted from the postings at query time (the query reads those
postings anyway), so they are exact under any interleaving of writes. A write that leaves an
item's `tsv` as it was (a metadata change, a replayed version) changes nothing here.

Scoring (Okapi BM25, Lucene's IDF), for the distinct terms t of the query:

    score(D) = sum_t idf(t) * tf(t, D) * (K1 + 1) / (tf(t, D) + K1 * (1 - B + B * |D| / avgdl))
    idf(t)   = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

with N the tenant's items, df(t) its items holding t, |D| the item's length and avgdl the mean
length. Limits of the analysis: `tsvector` keeps at most 256 positions per lexeme (a term more
frequent in one item counts 256 times, far into BM25's saturation) and positions past 16,383
collapse, so the length of very long items is undercounted.

A database from before BM25 is filled from its items once, when the tables are created.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from core.adapters.pgvector.base import PoolBound

K1 = 1.2
B = 0.75
COMPACT_EVERY = 64

BM25_SCHEMA = """
CREATE OR REPLACE FUNCTION bm25_length(tsv tsvector) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN (SELECT coalesce(sum(coalesce(cardinality(positions), 1)), 0)::integer FROM unnest(tsv));

DO $$ BEGIN
    IF to_regclass('bm25_postings') IS NULL THEN
        CREATE TABLE bm25_postings (
            tenant text NOT NULL,
            term text NOT NULL,
            item_id text NOT NULL,
            tf integer NOT NULL,
            doc_len integer NOT NULL,
            PRIMARY KEY (tenant, term, item_id)
        );
        CREATE TABLE IF NOT EXISTS bm25_stats (
            tenant text NOT NULL,
            docs bigint NOT NULL,
            length bigint NOT NULL
        );
        CREATE INDEX IF NOT EXISTS bm25_stats_tenant_idx ON bm25_stats (tenant);
        -- Existing items, once; no write may slip between this copy and the triggers below.
        LOCK TABLE items IN SHARE ROW EXCLUSIVE MODE;
        DELETE FROM bm25_stats;
        INSERT INTO bm25_postings (tenant, term, item_id, tf, doc_len)
            SELECT i.tenant, t.lexeme, i.id, coalesce(cardinality(t.positions), 1), bm25_length(i.tsv)
            FROM items i, unnest(i.tsv) t;
        INSERT INTO bm25_stats (tenant, docs, length)
            SELECT tenant, count(*), sum(bm25_length(tsv)) FROM items GROUP BY tenant;
    END IF;
END $$;

-- The rows a statement changed, as (sign, tenant, id, tsv): -1 for an old row, +1 for a new
-- one; an updated row whose tsv did not change is in neither.
CREATE OR REPLACE FUNCTION bm25_items_changed() RETURNS trigger LANGUAGE plpgsql AS $f$
DECLARE
    signs integer[];
    tenants text[];
    ids text[];
    tsvs tsvector[];
    t text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(1), array_agg(n.tenant), array_agg(n.id), array_agg(n.tsv)
            INTO signs, tenants, ids, tsvs FROM bm25_new n;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(-1), array_agg(o.tenant), array_agg(o.id), array_agg(o.tsv)
            INTO signs, tenants, ids, tsvs FROM bm25_old o;
    ELSE
        SELECT array_agg(c.sign), array_agg(c.tenant), array_agg(c.id), array_agg(c.tsv)
            INTO signs, tenants, ids, tsvs
            FROM bm25_old o JOIN bm25_new n USING (tenant, id),
                 LATERAL (VALUES (-1, o.tenant, o.id, o.tsv), (1, n.tenant, n.id, n.tsv))
                     AS c(sign, tenant, id, tsv)
            WHERE o.tsv IS DISTINCT FROM n.tsv;
    END IF;
    IF signs IS NULL THEN
        RETURN NULL;
    END IF;
    DELETE FROM bm25_postings p
        USING unnest(signs, tenants, ids, tsvs) AS d(sign, tenant, id, tsv), unnest(d.tsv) l
        WHERE d.sign < 0 AND p.tenant = d.tenant AND p.term = l.lexeme AND p.item_id = d.id;
    INSERT INTO bm25_postings (tenant, term, item_id, tf, doc_len)
        SELECT d.tenant, l.lexeme, d.id, coalesce(cardinality(l.positions), 1), bm25_length(d.tsv)
        FROM unnest(signs, tenants, ids, tsvs) AS d(sign, tenant, id, tsv), unnest(d.tsv) l
        WHERE d.sign > 0
        ON CONFLICT (tenant, term, item_id) DO UPDATE SET tf = EXCLUDED.tf, doc_len = EXCLUDED.doc_len;
    INSERT INTO bm25_stats (tenant, docs, length)
        SELECT d.tenant, sum(d.sign), sum(d.sign * bm25_length(d.tsv))
        FROM unnest(signs, tenants, ids, tsvs) AS d(sign, tenant, id, tsv)
        GROUP BY d.tenant HAVING sum(d.sign) <> 0 OR sum(d.sign * bm25_length(d.tsv)) <> 0;
    -- A tenant with COMPACT_EVERY rows has them folded into one (one folder per tenant at a
    -- time; rows that other transactions have not committed yet stay as they are).
    FOR t IN SELECT DISTINCT u FROM unnest(tenants) u LOOP
        IF (SELECT count(*) FROM (SELECT 1 FROM bm25_stats WHERE tenant = t LIMIT __COMPACT_EVERY__) r)
                >= __COMPACT_EVERY__ AND pg_try_advisory_xact_lock(7113, hashtext(t)) THEN
            WITH gone AS (DELETE FROM bm25_stats WHERE tenant = t RETURNING docs, length)
            INSERT INTO bm25_stats (tenant, docs, length)
                SELECT t, sum(docs), sum(length) FROM gone HAVING count(*) > 0;
        END IF;
    END LOOP;
    RETURN NULL;
END $f$;

CREATE OR REPLACE TRIGGER bm25_items_inserted AFTER INSERT ON items
    REFERENCING NEW TABLE AS bm25_new FOR EACH STATEMENT EXECUTE FUNCTION bm25_items_changed();
CREATE OR REPLACE TRIGGER bm25_items_updated AFTER UPDATE ON items
    REFERENCING OLD TABLE AS bm25_old NEW TABLE AS bm25_new
    FOR EACH STATEMENT EXECUTE FUNCTION bm25_items_changed();
CREATE OR REPLACE TRIGGER bm25_items_deleted AFTER DELETE ON items
    REFERENCING OLD TABLE AS bm25_old FOR EACH STATEMENT EXECUTE FUNCTION bm25_items_changed();
""".replace("__COMPACT_EVERY__", str(COMPACT_EVERY))

_SEARCH_SQL = """
WITH terms AS (SELECT DISTINCT lexeme AS term FROM unnest(to_tsvector('english', %(query)s))),
stats AS (SELECT sum(docs)::float8 AS n, sum(length)::float8 AS total FROM bm25_stats
          WHERE tenant = %(tenant)s),
postings AS (SELECT p.item_id, p.term, p.tf, p.doc_len FROM bm25_postings p JOIN terms USING (term)
             WHERE p.tenant = %(tenant)s),
df AS (SELECT term, count(*)::float8 AS df FROM postings GROUP BY term),
scores AS (
    SELECT p.item_id, sum(
        ln(1 + (s.n - d.df + 0.5) / (d.df + 0.5))
        * p.tf * (%(k1)s + 1) / (p.tf + %(k1)s * (1 - %(b)s + %(b)s * p.doc_len / (s.total / s.n)))
    ) AS score
    FROM postings p JOIN df d USING (term) CROSS JOIN stats s
    WHERE s.n > 0 AND s.total > 0
    GROUP BY p.item_id
)
SELECT c.item_id, c.score FROM scores c {filter}
ORDER BY c.score DESC, c.item_id LIMIT %(k)s
"""
_FILTER = ("JOIN items i ON i.tenant = %(tenant)s AND i.id = c.item_id "
           "AND i.metadata @> %(filters)s")


class Bm25Queries(PoolBound):
    async def text_search(
        self, tenant: str, query: str, k: int, filters: dict[str, Any]
    ) -> list[tuple[str, float]]:
        """The tenant's top-k items by BM25 for `query` (ties by id), among those whose
        metadata contains `filters`."""
        statement = sql.SQL(_SEARCH_SQL).format(filter=sql.SQL(_FILTER if filters else ""))
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(statement, {
                "query": query, "tenant": tenant, "filters": Jsonb(filters), "k": k, "k1": K1, "b": B,
            })).fetchall()
        return [(row[0], float(row[1])) for row in rows]
