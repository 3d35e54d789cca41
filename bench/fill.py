"""`flywheel bench fill`: a tenant with N items in minutes, for searching at scale.

1. N documents (bench.fill_texts: synthetic and deterministic from a seed, or a corpus repeated),
   chunked exactly as the indexer chunks them.
2. Their vectors in one batch pass through Triton's bulk lane, by the tenant's active model
   version (the vectors the indexer would have written).
3. Imported with COPY straight into `items` and the version's chunk table, slice by slice, each
   slice's items and chunks in one transaction (a counted item is searchable). COPY fires the
   statement triggers on `items`, so BM25's postings and statistics are kept as for any write.

HNSW: `insert` copies into the indexed table (the index grows row by row); `rebuild` drops the
version's HNSW index, copies, and builds it once over the whole table, which is faster but
leaves every search on that table without the index meanwhile, so it is allowed only when the
table holds no other tenant's rows. `auto` takes `rebuild` when allowed.

An operator's tool: it writes to the platform's PostgreSQL with the store's credentials, for
the one tenant named, and refuses a tenant that already has items unless told to replace them
(`replace`: the tenant's items and its chunks in every version are deleted first).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from psycopg import sql
from psycopg.types.json import Jsonb
from rich.progress import Progress

from bench.corpus import SYNTHETIC_SEED, Doc
from bench.fill_texts import documents, slices
from bench.runtime import Stack, machine_info, open_stack
from bench.stats import rate
from core.adapters.pgvector import PgVectorStore
from core.adapters.pgvector.schema import chunk_table, chunk_table_ddl
from core.bootstrap import build_chunker
from core.config import Settings
from core.search import NoActiveModel
from core.serving import version_model_name

IndexStrategy = Literal["auto", "insert", "rebuild"]
# Texts per embed call: a few requests of Triton's batch size in flight keep it busy; many more
# would wait past the request timeout on a slow CPU (the last of 16 requests waits for 15 batches).
EMBED_SLICE = 256
IMPORT_SLICE = 5000
ITEM_VERSION = 1
# Memory for one HNSW build: the graph of 100,000 384-dimensional vectors fits.
BUILD_MEMORY = "1GB"


class FillRefused(ValueError):
    """The fill would clobber or disturb what it must not: nothing was written."""


@dataclass
class FillConfig:
    tenant: str
    n: int = 100_000
    seed: int = SYNTHETIC_SEED
    corpus: Path | None = None
    replace: bool = False
    index: IndexStrategy = "auto"
    timeout_s: float = 600.0  # for each slice of texts sent to Triton


def validate(config: FillConfig) -> None:
    """Argument checks that need no stack (the CLI checks ranges too)."""
    if not config.tenant or config.tenant == "*" or not config.tenant.strip():
        raise ValueError("--tenant must name one tenant")
    if config.n < 1:
        raise ValueError("--n must be at least 1")
    if config.index not in ("auto", "insert", "rebuild"):
        raise ValueError(f"--index must be auto, insert or rebuild, not {config.index!r}")


async def _others_in(store: PgVectorStore, version: str, tenant: str) -> bool:
    async with store.pool.connection() as conn:
        row = await (await conn.execute(sql.SQL(
            "SELECT EXISTS (SELECT 1 FROM {t} WHERE tenant <> %s)").format(t=chunk_table(version)),
            (tenant,))).fetchone()
    return bool(row and row[0])


async def clear_tenant(store: PgVectorStore, tenant: str) -> int:
    """Delete the tenant's items (BM25 follows through the triggers), its chunks in every
    version and its delete markers; returns the items deleted."""
    async with store.pool.connection() as conn, conn.transaction():
        await conn.execute("SET LOCAL statement_timeout = 0")
        versions = [row[0] for row in await (await conn.execute(
            "SELECT version FROM model_versions WHERE to_regclass('chunks_v' || version) IS NOT NULL"
        )).fetchall()]
        for version in versions:
            await conn.execute(sql.SQL("DELETE FROM {t} WHERE tenant = %s").format(t=chunk_table(version)),
                               (tenant,))
        await conn.execute("DELETE FROM deleted_items WHERE tenant = %s", (tenant,))
        deleted = await conn.execute("DELETE FROM items WHERE tenant = %s", (tenant,))
        return deleted.rowcount


async def embed_all(
    stack: Stack, texts: list[str], version: str, progress: Progress, timeout_s: float
) -> np.ndarray:
    """Every text's vector through Triton's bulk lane, EMBED_SLICE texts at a time (the
    embedder sends each slice as requests of its request size, all in flight)."""
    task = progress.add_task("embedding (Triton bulk lane)", total=len(texts))
    parts = []
    for start, end in slices(len(texts), EMBED_SLICE):
        embedded = await asyncio.wait_for(
            stack.embedder.embed(texts[start:end], version, lane="bulk"), timeout_s)
        parts.append(np.asarray(embedded.vectors, dtype=np.float32))
        progress.advance(task, end - start)
    return np.concatenate(parts)


async def import_rows(
    store: PgVectorStore, tenant: str, version: str, docs: list[Doc], chunk_of: list[int],
    vectors: np.ndarray, progress: Progress,
) -> None:
    """COPY the items and their chunks, IMPORT_SLICE items per transaction. `chunk_of[i]` is
    the index of document i's first chunk in `vectors` (its chunks run to the next one's)."""
    task = progress.add_task("importing (COPY)", total=len(docs))
    bounds = [*chunk_of, len(vectors)]
    table = chunk_table(version)
    for start, end in slices(len(docs), IMPORT_SLICE):
        part = docs[start:end]
        async with store.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            await cur.execute("SET LOCAL statement_timeout = 0")
            # A delete marker of the same id would hide the item from later upserts' logic.
            await cur.execute("DELETE FROM deleted_items WHERE tenant = %s AND id = ANY(%s)",
                              (tenant, [doc.id for doc in part]))
            async with cur.copy(
                "COPY items (tenant, id, title, text, metadata, version) FROM STDIN"
            ) as copy:
                for doc in part:
                    await copy.write_row((tenant, doc.id, doc.title, doc.text, Jsonb(doc.metadata),
                                          ITEM_VERSION))
            async with cur.copy(sql.SQL(
                "COPY {t} (tenant, item_id, chunk_no, item_version, metadata, embedding) "
                "FROM STDIN WITH (FORMAT BINARY)").format(t=table)
            ) as copy:
                copy.set_types(["text", "text", "int4", "int8", "jsonb", "vector"])
                for offset, doc in enumerate(part, start):
                    for number, row in enumerate(range(bounds[offset], bounds[offset + 1])):
                        await copy.write_row((tenant, doc.id, number, ITEM_VERSION, Jsonb(doc.metadata),
                                              vectors[row]))
        progress.advance(task, len(part))


async def _drop_index(store: PgVectorStore, version: str) -> None:
    async with store.pool.connection() as conn:
        await conn.execute(sql.SQL("DROP INDEX IF EXISTS {i}").format(
            i=sql.Identifier(f"chunks_v{version}_hnsw")))


async def build_index(store: PgVectorStore, version: str, dim: int) -> None:
    """The version's HNSW index, built once over the table as it is."""
    async with store.pool.connection() as conn, conn.transaction():
        await conn.execute("SET LOCAL statement_timeout = 0")
        await conn.execute(sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(BUILD_MEMORY)))
        await conn.execute(chunk_table_ddl(version, dim)[1])


async def compare_index_builds(store: PgVectorStore, version: str, tenant: str) -> dict[str, Any]:
    """The tenant's vectors of `version` copied twice into temporary tables: into one that
    already has its HNSW index (rows inserted into the graph one by one), and into a bare one
    whose index is built afterwards (what `--index rebuild` does). Seconds of each."""
    source = chunk_table(version)
    timings: dict[str, float] = {}
    async with store.pool.connection() as conn, conn.transaction():
        await conn.execute("SET LOCAL statement_timeout = 0")
        await conn.execute(sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(BUILD_MEMORY)))
        for name in ("insert_into_indexed", "copy_then_build"):
            table = sql.Identifier(f"probe_{name}")
            await conn.execute(sql.SQL("CREATE TEMP TABLE {p} ON COMMIT DROP AS SELECT embedding FROM {t} "
                                       "WITH NO DATA").format(p=table, t=source))
            index = sql.SQL("CREATE INDEX ON {p} USING hnsw (embedding vector_cosine_ops)").format(p=table)
            fill = sql.SQL("INSERT INTO {p} SELECT embedding FROM {t} WHERE tenant = %s").format(
                p=table, t=source)
            began = time.perf_counter()
            if name == "insert_into_indexed":
                await conn.execute(index)
                rows = (await conn.execute(fill, (tenant,))).rowcount
            else:
                rows = (await conn.execute(fill, (tenant,))).rowcount
                await conn.execute(index)
            timings[f"{name}_s"] = round(time.perf_counter() - began, 2)
    slower = timings["insert_into_indexed_s"]
    return {"rows": rows, **timings,
            "ratio_insert_to_build": round(slower / timings["copy_then_build_s"], 2)
            if timings["copy_then_build_s"] else None}


async def run_compare_index(settings: Settings, tenant: str) -> dict[str, Any]:
    machine = machine_info()
    async with open_stack(settings, ingest=False) as stack:
        version = await stack.store.active_version(tenant)
        if version is None:
            raise NoActiveModel("no model version is active yet")
        if not await stack.store.count_items(tenant):
            raise FillRefused(f"tenant {tenant!r} has no items: fill it first (`flywheel bench fill`)")
        result = await compare_index_builds(stack.store, version, tenant)
    return {"bench": "fill-compare-index", "tenant": tenant, "model_version": version, **result,
            "machine": machine}


async def run_fill(settings: Settings, config: FillConfig, progress: Progress) -> dict[str, Any]:
    validate(config)
    machine = machine_info()  # before the run: its load average is the other work's
    async with open_stack(settings, ingest=False) as stack:
        store = stack.store
        existing = await store.count_items(config.tenant)
        if existing and not config.replace:
            raise FillRefused(f"tenant {config.tenant!r} already holds {existing} items; pass --replace "
                              "to delete them (and their chunks) before the fill")
        version = await store.active_version(config.tenant)
        if version is None:
            raise NoActiveModel("no model version is active yet: start the indexer once (`flywheel up`)")
        writable = await store.writable_versions(config.tenant)
        if set(writable) - {version}:
            raise FillRefused(f"tenant {config.tenant!r} is building version(s) "
                              f"{', '.join(sorted(set(writable) - {version}))}: fill it after the reindex")
        others = await _others_in(store, version, config.tenant)
        strategy = config.index
        if strategy == "auto":
            strategy = "insert" if others else "rebuild"
        if strategy == "rebuild" and others:
            raise FillRefused(f"chunks_v{version} holds other tenants' chunks: rebuilding its index would "
                              "leave their searches without it; use --index insert")
        timings: dict[str, float] = {}
        with progress:
            began = time.perf_counter()
            docs = documents(config.n, config.seed, config.corpus)
            chunker = build_chunker(settings)
            texts: list[str] = []
            chunk_of: list[int] = []
            for doc in docs:
                chunk_of.append(len(texts))
                texts.extend(chunker.split_item(doc.title, doc.text, doc.metadata))
            timings["generate_s"] = time.perf_counter() - began

            began = time.perf_counter()
            vectors = await embed_all(stack, texts, version, progress, config.timeout_s)
            timings["embed_s"] = time.perf_counter() - began

            cleared = await clear_tenant(store, config.tenant) if existing else 0
            began = time.perf_counter()
            if strategy == "rebuild":
                await _drop_index(store, version)
            try:
                await import_rows(store, config.tenant, version, docs, chunk_of, vectors, progress)
                timings["import_s"] = time.perf_counter() - began
            finally:
                if strategy == "rebuild":  # the index comes back even after a failed import
                    building = progress.add_task("building the HNSW index", total=None)
                    began = time.perf_counter()
                    await build_index(store, version, int(vectors.shape[1]))
                    timings["index_build_s"] = time.perf_counter() - began
                    progress.update(building, total=1, completed=1)
        items = await store.count_items(config.tenant)
    index_s = timings["import_s"] + timings.get("index_build_s", 0.0)
    return {
        "bench": "fill",
        "tenant": config.tenant,
        "items": items,
        "chunks": len(texts),
        "replaced_items": cleared,
        "documents": "synthetic" if config.corpus is None else f"{config.corpus}, repeated to {config.n}",
        "seed": config.seed if config.corpus is None else None,
        "model_version": version,
        "vectors": f"Triton bulk lane ({version_model_name(settings.triton_model_name, version)})",
        "index_strategy": strategy,
        "seconds": {key: round(value, 2) for key, value in timings.items()},
        "texts_per_s_embed": round(rate(len(texts), timings["embed_s"]), 1),
        "rows_per_s_import_and_index": round(rate(len(texts), index_s), 1),
        "total_s": round(sum(timings.values()), 1),
        "machine": machine,
    }
