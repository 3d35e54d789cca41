"""Training and evaluation data from session documents.

- Positives: (query, clicked or converted item). Hard negatives: items shown ranked above a
  clicked item in the same search, not clicked there (the model put them first and the user
  skipped them); at most `max_negatives` per positive, the highest-ranked first. With a
  `CandidateRanker`, also negatives mined from the index by the active model (core.training.mining).
- Deduplicated: one (query, positive) pair, one (query, positive, negative) triple per key.
- Held-out evaluation by session, never by pair: a deterministic hash of the session id puts
  a session wholly in training or wholly in evaluation.
- Uploaded judgments (core.datasets) add pairs: grade > 0 a positive, grade 0 a negative of
  every positive of its query; a held-out uploaded set replaces held-out sessions for the gate
  (its pool: the judged items and what the active model ranks highest for each query).
- With a `KeywordSearch`, each held-out query also carries the tenant's BM25 ranking, whose
  items join the pool: the evaluation fuses it with the candidate's ranking to choose the
  version's fusion weight (core.training.evaluation).
- Streamed: sessions come from a cursor in batches; item texts are fetched per batch; the
  examples and evaluation queries kept are capped, so memory never grows with history.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from core.fusion import FUSION_DEPTH
from core.ports import CandidateRanker, ItemTexts, KeywordSearch, SessionSource
from core.sessions import SessionDoc
from core.training.mining import MiningConfig, MiningQuery, mine


@dataclass(frozen=True)
class DatasetConfig:
    eval_fraction: float = 0.2
    max_negatives: int = 3
    max_examples: int = 200_000
    max_eval_queries: int = 5_000
    max_pool_items: int = 50_000
    session_batch: int = 256
    # Items of the tenant read as the corpus a linear map is contrasted against (0: none).
    corpus_items: int = 0


@dataclass(frozen=True)
class Example:
    anchor: str
    positive: str
    negative: str | None = None


@dataclass(frozen=True)
class Judged:
    """One uploaded judgment: `item_id` is relevant to `query` with `grade` (0: not relevant)."""

    query: str
    item_id: str
    grade: float = 1.0


@dataclass(frozen=True)
class EvalQuery:
    tenant: str
    query: str
    relevant: frozenset[str]
    # The tenant's BM25 ranking for the query, (id, score) best first, as hybrid search reads
    # it: what the evaluation fuses with the candidate's ranking to choose the fusion weight.
    keyword: tuple[tuple[str, float], ...] = ()
    # The items whose relevance the sessions observed (shown: clicked or passed over), or None
    # when every unlisted item counts as irrelevant (an uploaded evaluation set). The fusion
    # weight is scored on the fused ranking cut down to them (a condensed list): an item only
    # BM25 brings was never shown, so its relevance is unknown, and counting it irrelevant
    # favours the vector ranking that chose what was shown.
    judged: frozenset[str] | None = None


@dataclass
class DatasetStats:
    sessions: int = 0
    sessions_with_clicks: int = 0
    train_sessions: int = 0
    eval_sessions: int = 0
    pairs: int = 0
    pairs_with_negatives: int = 0
    triples: int = 0
    eval_queries: int = 0
    eval_pool_items: int = 0
    missing_items: int = 0
    negatives_clicked_elsewhere: int = 0  # shown-above negatives dropped: clicked for the query elsewhere
    judged_pairs: int = 0  # positives from uploaded datasets
    judged_negatives: int = 0  # triples whose negative an uploaded dataset graded 0
    judged_eval_queries: int = 0  # queries of the held-out uploaded dataset
    judged_missing_items: int = 0  # judged items the tenant's index does not hold
    mined_queries: int = 0
    mined_negatives: int = 0  # triples whose negative was mined from the index
    mined_skipped_close_to_positive: int = 0  # candidates the false-negative filter dropped
    keyword_eval_queries: int = 0  # held-out queries with a BM25 ranking (choose the fusion weight)
    keyword_pool_items: int = 0  # pool items added because BM25 ranks them for a held-out query
    corpus_items: int = 0  # the tenant's items read as the linear map's negatives
    truncated: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainingDataset:
    triples: list[Example] = field(default_factory=list)
    pairs: list[Example] = field(default_factory=list)  # positives that have no hard negative
    eval_queries: list[EvalQuery] = field(default_factory=list)
    pools: dict[str, dict[str, str]] = field(default_factory=dict)  # tenant -> id -> text
    corpus: dict[str, dict[str, str]] = field(default_factory=dict)  # tenant -> id -> text
    stats: DatasetStats = field(default_factory=DatasetStats)

    @property
    def train_size(self) -> int:
        return len(self.triples) + len(self.pairs)


@dataclass(frozen=True)
class Judgement:
    """One search of a session: the query, the items clicked (with rank) and those shown."""

    query: str
    clicked: list[tuple[str, int]]
    shown: list[tuple[str, int]]


def is_eval_session(key: str, fraction: float) -> bool:
    """Deterministic: the same session is always held out, in every run and process."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def judgements(doc: SessionDoc) -> list[Judgement]:
    result = []
    for search in doc.get("searches", []):
        shown = sorted(((r["id"], int(r["rank"])) for r in search.get("results", [])), key=lambda p: p[1])
        rank_of = dict(shown)
        clicked: dict[str, int] = {}
        for click in search.get("clicks", []):
            cid = click["content_id"]
            clicked.setdefault(cid, rank_of.get(cid, int(click.get("rank") or len(shown) + 1)))
        for conversion in search.get("conversions", []):
            cid = conversion["content_id"]
            clicked.setdefault(cid, rank_of.get(cid, len(shown) + 1))
        if clicked:
            result.append(Judgement(search["query"], sorted(clicked.items(), key=lambda p: p[1]), shown))
    return result


def hard_negatives(judgement: Judgement, rank: int, max_negatives: int) -> list[str]:
    """Items shown above `rank` and not clicked in this search, best-ranked first."""
    clicked = {cid for cid, _ in judgement.clicked}
    above = [item for item, r in judgement.shown if r < rank and item not in clicked]
    return above[:max_negatives]


class DatasetBuilder:
    def __init__(self, source: SessionSource, items: ItemTexts, config: DatasetConfig,
                 ranker: CandidateRanker | None = None, mining: MiningConfig | None = None,
                 keyword: KeywordSearch | None = None) -> None:
        self.source = source
        self.items = items
        self.config = config
        self.ranker = ranker
        self.mining = mining or MiningConfig()
        self.keyword = keyword

    async def build(
        self, since: datetime | None = None, until: datetime | None = None, *, tenant: str = "default",
        use_sessions: bool = True, judged: Sequence[Judged] = (), held_out: Sequence[Judged] | None = None,
        corpus: bool = False,
    ) -> TrainingDataset:
        """Sessions of the window (unless `use_sessions` is false) and the tenant's `judged`
        pairs; evaluation on held-out sessions, or on the `held_out` judgments when given; with
        `corpus`, a sample of the tenant's items (up to `corpus_items`) for a linear map."""
        data = TrainingDataset()
        config = self.config if held_out is None else replace(self.config, eval_fraction=0.0)
        acc = _Accumulator(data, config)
        if use_sessions:
            await self._sessions(since, until, acc)
        if judged:
            await self._judged(tenant, judged, acc)
        if self.ranker is not None:
            await self._mine(acc)
        if held_out is not None:
            await self._held_out(tenant, held_out, acc)
        if self.keyword is not None:
            await self._keyword_rankings(self.keyword, acc)
        if corpus and self.config.corpus_items > 0:
            sampled = await self.items.sample(tenant, self.config.corpus_items)
            data.corpus[tenant] = sampled
            data.stats.corpus_items = len(sampled)
        acc.finish()
        return data

    async def _sessions(self, since: datetime | None, until: datetime | None, acc: _Accumulator) -> None:
        data = acc.data
        batch: list[SessionDoc] = []
        async for doc in self.source.iter_sessions(since, until, self.config.session_batch):
            batch.append(doc)
            if len(batch) >= self.config.session_batch:
                await self._process(batch, acc)
                batch = []
            if acc.full:
                data.stats.truncated = True
                break
        if batch:
            await self._process(batch, acc)

    async def _judged(self, tenant: str, judged: Sequence[Judged], acc: _Accumulator) -> None:
        texts = await self.items.texts(tenant, sorted({j.item_id for j in judged}))
        stats = acc.data.stats
        stats.judged_missing_items += len({j.item_id for j in judged} - set(texts))
        by_query: dict[str, list[Judged]] = {}
        for j in judged:
            if j.item_id in texts:
                by_query.setdefault(j.query, []).append(j)
        for query, found in by_query.items():
            positives = [j.item_id for j in sorted(found, key=lambda j: -j.grade) if j.grade > 0]
            negatives = [j.item_id for j in found if j.grade <= 0]
            acc.clicked.setdefault((tenant, query), set()).update(positives)
            for item in positives:
                if acc.add_pair(tenant, query, item, texts[item]):
                    stats.judged_pairs += 1
                for negative in negatives[: self.config.max_negatives]:
                    example = Example(query, texts[item], texts[negative])
                    if acc.add_triple((tenant, query, item, negative), example):
                        stats.judged_negatives += 1

    async def _held_out(self, tenant: str, held_out: Sequence[Judged], acc: _Accumulator) -> None:
        """The gate's evaluation from an uploaded set: relevant = graded > 0; the pool, every
        judged item and the active model's top candidates for each query (a re-ranking pool,
        so the candidate is judged among the items a search would really weigh)."""
        relevant: dict[str, set[str]] = {}
        for j in held_out:
            ids = relevant.setdefault(j.query, set())
            if j.grade > 0:
                ids.add(j.item_id)
        queries = [q for q, ids in relevant.items() if ids][: self.config.max_eval_queries]
        kept = set(queries)
        pool_ids = {j.item_id for j in held_out if j.query in kept}
        if self.ranker is not None:
            for query in queries:
                ranked, _ = await self.ranker.rank(tenant, query, self.mining.depth, {})
                pool_ids.update(item for item, _ in ranked)
        texts = await self.items.texts(tenant, sorted(pool_ids)[: self.config.max_pool_items])
        stats = acc.data.stats
        stats.judged_missing_items += len({j.item_id for j in held_out} - set(texts))
        acc.data.pools.setdefault(tenant, {}).update(texts)
        for query in queries:
            if kept := {item for item in relevant[query] if item in texts}:
                acc.eval[(tenant, query)] = kept
                acc.eval_shown.pop((tenant, query), None)  # judged: every other item is irrelevant
                stats.judged_eval_queries += 1

    async def _keyword_rankings(self, keyword: KeywordSearch, acc: _Accumulator) -> None:
        """Each held-out query's BM25 top FUSION_DEPTH in its tenant's index; the items not in
        the pool join it (while it has room), so the candidate ranks them too, as hybrid search
        fuses the top items of both rankings."""
        data = acc.data
        wanted: dict[str, list[str]] = {}
        for tenant, query in acc.eval:
            ranked = await keyword.text_search(tenant, query, FUSION_DEPTH, {})
            if not ranked:
                continue
            acc.keyword[(tenant, query)] = tuple(ranked)
            pool = data.pools.get(tenant, {})
            wanted.setdefault(tenant, []).extend(item for item, _ in ranked if item not in pool)
        for tenant, ids in sorted(wanted.items()):
            room = self.config.max_pool_items - sum(len(p) for p in data.pools.values())
            texts = await self.items.texts(tenant, list(dict.fromkeys(ids))[: max(room, 0)])
            data.pools.setdefault(tenant, {}).update(texts)
            data.stats.keyword_pool_items += len(texts)

    async def _mine(self, acc: _Accumulator) -> None:
        """Mined negatives for the training pairs, as triples (none for held-out queries)."""
        queries = [MiningQuery(tenant, query, positives, frozenset(acc.clicked.get((tenant, query), ())))
                   for (tenant, query), positives in acc.train_positives.items()]
        assert self.ranker is not None
        outcome = await mine(queries, self.ranker, self.mining)
        stats = acc.data.stats
        stats.mined_queries = outcome.queries
        stats.mined_skipped_close_to_positive = outcome.skipped_close_to_positive
        wanted: dict[str, set[str]] = {}
        for (tenant, _, _), negatives in outcome.negatives.items():
            wanted.setdefault(tenant, set()).update(negatives)
        texts = {tenant: await self.items.texts(tenant, sorted(ids)) for tenant, ids in wanted.items()}
        for (tenant, query, positive), negatives in outcome.negatives.items():
            positive_text = acc.train_positives[(tenant, query)][positive]
            for negative in negatives:
                if negative not in texts[tenant]:
                    continue  # deleted since it was ranked
                example = Example(query, positive_text, texts[tenant][negative])
                if acc.add_triple((tenant, query, positive, negative), example):
                    stats.mined_negatives += 1

    async def _process(self, sessions: list[SessionDoc], acc: _Accumulator) -> None:
        parsed = [(doc, judgements(doc)) for doc in sessions]
        wanted: dict[str, set[str]] = {}
        for doc, found in parsed:
            for j in found:
                ids = wanted.setdefault(doc["tenant"], set())
                ids.update(cid for cid, _ in j.clicked)
                ids.update(item for item, _ in j.shown)
        texts = {tenant: await self.items.texts(tenant, sorted(ids)) for tenant, ids in wanted.items()}
        for doc, found in parsed:
            acc.add(doc, found, texts.get(doc["tenant"], {}))


class _Accumulator:
    def __init__(self, data: TrainingDataset, config: DatasetConfig) -> None:
        self.data = data
        self.config = config
        self.pairs: dict[tuple[str, str, str], Example] = {}
        self.triples: dict[tuple[str, str, str, str], Example] = {}
        self.eval: dict[tuple[str, str], set[str]] = {}
        self.eval_shown: dict[tuple[str, str], set[str]] = {}
        self.keyword: dict[tuple[str, str], tuple[tuple[str, float], ...]] = {}
        self.pool_size = 0
        # For mining: every item clicked for a query (training and held-out sessions alike),
        # and the training positives with their texts.
        self.clicked: dict[tuple[str, str], set[str]] = {}
        self.train_positives: dict[tuple[str, str], dict[str, str]] = {}

    @property
    def full(self) -> bool:
        return (len(self.pairs) + len(self.triples) >= self.config.max_examples
                and len(self.eval) >= self.config.max_eval_queries)

    def add(self, doc: SessionDoc, found: list[Judgement], texts: dict[str, str]) -> None:
        stats = self.data.stats
        stats.sessions += 1
        if not found:
            return
        stats.sessions_with_clicks += 1
        tenant = doc["tenant"]
        for j in found:
            self.clicked.setdefault((tenant, j.query), set()).update(cid for cid, _ in j.clicked)
        if is_eval_session(doc["_id"], self.config.eval_fraction):
            stats.eval_sessions += 1
            self._add_eval(tenant, found, texts)
        else:
            stats.train_sessions += 1
            self._add_train(tenant, found, texts)

    def _add_train(self, tenant: str, found: list[Judgement], texts: dict[str, str]) -> None:
        for j in found:
            for cid, rank in j.clicked:
                if len(self.pairs) + len(self.triples) >= self.config.max_examples:
                    return
                if cid not in texts:
                    self.data.stats.missing_items += 1
                    continue
                self.add_pair(tenant, j.query, cid, texts[cid])
                for neg in hard_negatives(j, rank, self.config.max_negatives):
                    if neg in texts:
                        self.add_triple((tenant, j.query, cid, neg), Example(j.query, texts[cid], texts[neg]))

    def add_pair(self, tenant: str, query: str, item: str, text: str) -> bool:
        """Keep a (query, positive) pair once; False when it was already kept."""
        self.train_positives.setdefault((tenant, query), {}).setdefault(item, text)
        if (tenant, query, item) in self.pairs:
            return False
        self.pairs[(tenant, query, item)] = Example(query, text)
        return True

    def add_triple(self, key: tuple[str, str, str, str], example: Example) -> bool:
        """Keep a (query, positive, negative) triple once; False when it was already kept."""
        if key in self.triples:
            return False
        self.triples[key] = example
        return True

    def _add_eval(self, tenant: str, found: list[Judgement], texts: dict[str, str]) -> None:
        pool = self.data.pools.setdefault(tenant, {})
        for j in found:
            relevant = {cid for cid, _ in j.clicked if cid in texts}
            if not relevant:
                continue
            key = (tenant, j.query)
            if key not in self.eval and len(self.eval) >= self.config.max_eval_queries:
                continue
            self.eval.setdefault(key, set()).update(relevant)
            self.eval_shown.setdefault(key, set()).update(relevant, (i for i, _ in j.shown))
            for item in [*relevant, *(i for i, _ in j.shown)]:
                if item in texts and item not in pool and self.pool_size < self.config.max_pool_items:
                    pool[item] = texts[item]
                    self.pool_size += 1

    def finish(self) -> None:
        data, stats = self.data, self.data.stats
        # A negative that some session clicked for the same query is not one (known only now,
        # every session read): the shown-above rule sees one search at a time.
        for key in [k for k in self.triples if k[3] in self.clicked.get(k[:2], ())]:
            del self.triples[key]
            stats.negatives_clicked_elsewhere += 1
        with_negatives = {key[:3] for key in self.triples}
        data.triples = list(self.triples.values())
        data.pairs = [ex for key, ex in self.pairs.items() if key not in with_negatives]
        shown = {key: frozenset(items) for key, items in self.eval_shown.items()}
        data.eval_queries = [EvalQuery(t, q, frozenset(rel), self.keyword.get((t, q), ()), shown.get((t, q)))
                             for (t, q), rel in self.eval.items()]
        stats.keyword_eval_queries = len(self.keyword)
        stats.pairs = len(self.pairs)
        stats.pairs_with_negatives = len(with_negatives)
        stats.triples = len(data.triples)
        stats.eval_queries = len(data.eval_queries)
        stats.eval_pool_items = sum(len(p) for p in data.pools.values())


def item_text(title: str, text: str) -> str:
    """What the indexer embeds for an item (its first chunk starts with the title)."""
    return f"{title}\n{text}" if title else text


