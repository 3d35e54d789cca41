"""The improver: between trainings, nudge stored item vectors by the clicks (pure, over ports).

For each click in a window of session time, the clicked item's chunk vectors move toward the
embedding of the query, and the items shown above it but skipped move away from it:

- bounded: one step moves a vector by at most `alpha` (a tangent step on the unit sphere,
  then renormalised), and a vector never drifts further from its original embedding than
  ``cosine(adjusted, original) >= min_cosine`` (beyond that it is put back on that boundary);
- reversible: the original vector of every adjusted chunk is kept (the adapter's side table),
  and :func:`revert` restores the originals exactly;
- versioned: adjustments belong to one model version and carry a revision, bumped by every run
  and by a revert; a new model version starts clean (its index is embedded afresh). When the
  indexer rewrites an item (a newer item version), its chunks are embedded anew and the
  adjustment of that item lapses (the kept original no longer matches the chunk's item version);
- measured: every run evaluates nDCG@10 / MRR@10 / Recall@10 on held-out sessions (the same
  split and metrics as training; their clicks never feed adjustments), ranking the held-out
  searches' items by their original vectors and by the adjusted ones.

Clicks are taken by their time (`at`) in [watermark, now - settle_s): each click counts once.

Per tenant: a run is one tenant's, on that tenant's active version, from its own sessions only,
moving only its own items' vectors; revision, watermark and metrics are kept per (version,
tenant). :func:`improve_tenants` runs every tenant with sessions in the evaluation window.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from core.ports import AdjustmentStore, Embedder, SessionSource, TenantSessionSource
from core.sessions import SessionDoc
from core.training.dataset import is_eval_session, judgements
from core.training.metrics import mean_metrics, prefixed
from schemas.envelope import DEFAULT_TENANT

log = logging.getLogger(__name__)
K = 10
Key = tuple[str, str]  # (tenant, item id)


@dataclass(frozen=True)
class ImproverConfig:
    alpha: float = 0.1
    min_cosine: float = 0.9
    away_weight: float = 0.5
    max_negatives: int = 3
    eval_fraction: float = 0.2
    max_sessions: int = 10_000
    max_queries: int = 2_000
    max_eval_queries: int = 1_000
    eval_window: timedelta = timedelta(days=30)
    settle_s: float = 5.0


@dataclass(frozen=True)
class ChunkState:
    chunk_no: int
    item_version: int
    current: np.ndarray
    original: np.ndarray  # the current vector itself when the chunk is not adjusted


@dataclass(frozen=True)
class ChunkUpdate:
    tenant: str
    item_id: str
    chunk_no: int
    item_version: int
    vector: np.ndarray
    original: np.ndarray


@dataclass(frozen=True)
class ImproverState:
    revision: int = 0
    watermark: datetime | None = None
    metrics: dict[str, float] = field(default_factory=dict)


# --- the math ---------------------------------------------------------------------------------
def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def cap_drift(vector: np.ndarray, original: np.ndarray, min_cosine: float) -> np.ndarray:
    """`vector` (unit), or the point on the great circle from `original` toward it whose cosine
    to `original` is exactly `min_cosine` when it drifted further."""
    o = _unit(original.astype(np.float64))
    v = _unit(vector.astype(np.float64))
    if float(v @ o) >= min_cosine:
        return v
    w = v - float(v @ o) * o
    if float(np.linalg.norm(w)) < 1e-12:  # opposite: any orthogonal direction is as good
        w = np.roll(o, 1) - float(np.roll(o, 1) @ o) * o
    return min_cosine * o + np.sqrt(max(0.0, 1.0 - min_cosine**2)) * _unit(w)


def adjust_vector(
    current: np.ndarray, original: np.ndarray, toward: Sequence[np.ndarray], away: Sequence[np.ndarray],
    alpha: float, min_cosine: float, away_weight: float = 0.5,
) -> np.ndarray:
    """One bounded step of `current` toward the `toward` queries and away from the `away` ones.

    The step is tangent to the sphere at `current` with length `alpha` before renormalising, so
    the vector moves by less than `alpha`; the result keeps cosine >= `min_cosine` to `original`.
    """
    c = _unit(current.astype(np.float64))
    direction = np.zeros_like(c)
    if len(toward):
        direction += np.mean(np.asarray(toward, dtype=np.float64), axis=0)
    if len(away):
        direction -= away_weight * np.mean(np.asarray(away, dtype=np.float64), axis=0)
    tangent = direction - float(direction @ c) * c
    norm = float(np.linalg.norm(tangent))
    if norm < 1e-12:
        return cap_drift(c, original, min_cosine).astype(np.float32)
    moved = _unit(c + alpha * tangent / norm)
    return cap_drift(moved, original, min_cosine).astype(np.float32)


# --- feedback from sessions ----------------------------------------------------------------------
@dataclass
class Feedback:
    toward: dict[Key, list[str]] = field(default_factory=dict)  # item -> queries clicked for it
    away: dict[Key, list[str]] = field(default_factory=dict)  # item -> queries it was skipped for
    clicks: int = 0

    def queries(self) -> set[str]:
        return {q for qs in (*self.toward.values(), *self.away.values()) for q in qs}


def session_feedback(
    doc: SessionDoc, version: str, since: datetime | None, until: datetime, max_negatives: int,
    into: Feedback,
) -> None:
    """Fold the clicks of `doc` in [since, until) on searches served by `version` into `into`."""
    tenant = doc["tenant"]
    for search in doc.get("searches", []):
        if str(search.get("model_version")) != version:
            continue
        shown = sorted(((r["id"], int(r["rank"])) for r in search.get("results", [])), key=lambda p: p[1])
        rank_of = dict(shown)
        clicked_ids = {c["content_id"] for c in search.get("clicks", [])}
        query = search["query"]
        for click in search.get("clicks", []):
            at = click.get("at")
            if at is None or at >= until or (since is not None and at < since):
                continue
            cid = click["content_id"]
            rank = rank_of.get(cid, int(click.get("rank") or len(shown) + 1))
            into.clicks += 1
            into.toward.setdefault((tenant, cid), []).append(query)
            skipped = [item for item, r in shown if r < rank and item not in clicked_ids][:max_negatives]
            for item in skipped:
                into.away.setdefault((tenant, item), []).append(query)


@dataclass(frozen=True)
class EvalSearch:
    tenant: str
    query: str
    relevant: frozenset[str]
    pool: tuple[str, ...]


def eval_searches(doc: SessionDoc) -> list[EvalSearch]:
    return [
        EvalSearch(doc["tenant"], j.query, frozenset(c for c, _ in j.clicked),
                   tuple(dict.fromkeys([i for i, _ in j.shown] + [c for c, _ in j.clicked])))
        for j in judgements(doc)
    ]


def rank_items(query: np.ndarray, items: dict[str, list[np.ndarray]], k: int = K) -> list[str]:
    """Items by their best chunk's cosine to `query`, best first (ties by id)."""
    scores = {item: max(float(v @ query) for v in vectors) for item, vectors in items.items() if vectors}
    return [item for item, _ in sorted(scores.items(), key=lambda p: (-p[1], p[0]))[:k]]


def evaluate_vectors(
    searches: Sequence[EvalSearch], query_vectors: dict[str, np.ndarray],
    vectors: dict[Key, list[np.ndarray]],
) -> dict[str, float]:
    rankings = []
    for s in searches:
        if s.query not in query_vectors:
            continue
        pool = {item: vectors[(s.tenant, item)] for item in s.pool if (s.tenant, item) in vectors}
        rankings.append((rank_items(query_vectors[s.query], pool), s.relevant))
    metrics = mean_metrics(rankings, K)
    metrics["queries"] = float(len(rankings))
    return metrics


# --- the handler --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImproveReport:
    version: str | None
    revision: int
    tenant: str = DEFAULT_TENANT
    items: int = 0
    chunks: int = 0
    clicks: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    committed: bool = True


async def _embed_all(embedder: Embedder, texts: list[str], version: str) -> dict[str, np.ndarray]:
    result: dict[str, np.ndarray] = {}
    size = max(1, embedder.max_batch_size)
    for start in range(0, len(texts), size):
        batch = texts[start:start + size]
        embedded = await embedder.embed(batch, version)
        result.update(zip(batch, np.asarray(embedded.vectors, dtype=np.float32), strict=True))
    return result


async def improve(
    store: AdjustmentStore, sessions: SessionSource, embedder: Embedder, config: ImproverConfig,
    now: datetime | None = None, *, tenant: str = DEFAULT_TENANT,
) -> ImproveReport:
    """One run of `tenant` over its clicks since its last run, on its active version.
    `sessions` are the tenant's (a document of another tenant is ignored all the same)."""
    version = await store.active_version(tenant)
    if version is None:
        return ImproveReport(None, 0, tenant, committed=False)
    now = now or datetime.now(UTC)
    state = await store.improver_state(version, tenant)
    until = now - timedelta(seconds=config.settle_s)
    since = state.watermark
    eval_since = now - config.eval_window
    read_from = eval_since if since is None else min(since, eval_since)

    feedback = Feedback()
    held_out: list[EvalSearch] = []
    read = 0
    truncated = False
    async for doc in sessions.iter_sessions(read_from, None, 256):
        if doc.get("tenant") != tenant:
            continue
        read += 1
        if is_eval_session(doc["_id"], config.eval_fraction):
            if len(held_out) < config.max_eval_queries:
                held_out.extend(eval_searches(doc))
        else:
            session_feedback(doc, version, since, until, config.max_negatives, feedback)
        if read >= config.max_sessions or len(feedback.queries()) >= config.max_queries:
            # Bounded work per run: the rest of this window's clicks are skipped, not replayed.
            truncated = True
            log.warning("improver: run capped after %d sessions / %d queries", read, config.max_queries)
            break
    held_out = held_out[: config.max_eval_queries]

    queries = sorted(feedback.queries() | {s.query for s in held_out})
    query_vectors = await _embed_all(embedder, queries, version) if queries else {}
    keys = sorted(set(feedback.toward) | set(feedback.away)
                  | {(s.tenant, item) for s in held_out for item in s.pool})
    chunks = await store.chunk_vectors(version, keys) if keys else {}

    updates: list[ChunkUpdate] = []
    for key in sorted(set(feedback.toward) | set(feedback.away)):
        toward = [query_vectors[q] for q in feedback.toward.get(key, [])]
        away = [query_vectors[q] for q in feedback.away.get(key, [])]
        for chunk in chunks.get(key, []):
            vector = adjust_vector(chunk.current, chunk.original, toward, away,
                                   config.alpha, config.min_cosine, config.away_weight)
            updates.append(ChunkUpdate(key[0], key[1], chunk.chunk_no, chunk.item_version,
                                       vector, chunk.original))

    adjusted = {(u.tenant, u.item_id, u.chunk_no): u.vector for u in updates}
    originals = {key: [c.original for c in cs] for key, cs in chunks.items()}
    after = {key: [adjusted.get((key[0], key[1], c.chunk_no), c.current) for c in cs]
             for key, cs in chunks.items()}
    metrics: dict[str, float] = {}
    if held_out:
        metrics.update(prefixed(evaluate_vectors(held_out, query_vectors, originals), "original"))
        metrics.update(prefixed(evaluate_vectors(held_out, query_vectors, after), "adjusted"))
    items = len({(u.tenant, u.item_id) for u in updates})
    revision = state.revision + (1 if updates else 0)
    metrics.update({"revision": float(revision), "items_adjusted_last_run": float(items),
                    "chunks_adjusted_last_run": float(len(updates)),
                    "clicks_last_run": float(feedback.clicks),
                    "truncated_last_run": float(truncated)})
    committed = await store.commit_run(version, tenant, state.revision, updates, until, metrics)
    if committed and updates:
        log.info("improver: tenant %s version %s revision %d: %d clicks adjusted %d items (%d chunks); %s",
                 tenant, version, revision, feedback.clicks, items, len(updates), metrics)
    return ImproveReport(version, revision if committed else state.revision, tenant, items, len(updates),
                         feedback.clicks, metrics, committed)


async def improve_tenants(
    store: AdjustmentStore, sessions: TenantSessionSource, embedder: Embedder, config: ImproverConfig,
    now: datetime | None = None, tenants: Sequence[str] | None = None,
) -> list[ImproveReport]:
    """One run for each tenant with sessions in the evaluation window (or each of `tenants`),
    one after the other; a tenant whose run fails is logged and the next one still runs."""
    now = now or datetime.now(UTC)
    if tenants is None:
        tenants = await sessions.tenants_since(now - config.eval_window)
    reports: list[ImproveReport] = []
    for tenant in sorted(set(tenants)):
        try:
            reports.append(await improve(store, sessions.for_tenant(tenant), embedder, config, now,
                                         tenant=tenant))
        except Exception:
            log.exception("improver: the run of tenant %s failed; it is retried at the next run", tenant)
    return reports





def improver_config(settings: Any) -> ImproverConfig:
    """The improver's configuration from Settings."""
    return ImproverConfig(
        alpha=settings.improver_alpha, min_cosine=settings.improver_min_cosine,
        away_weight=settings.improver_away_weight, max_negatives=settings.training_max_negatives,
        eval_fraction=settings.training_eval_fraction, max_sessions=settings.improver_max_sessions,
        max_queries=settings.improver_max_queries, settle_s=settings.improver_settle_s,
    )
