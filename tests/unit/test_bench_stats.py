"""The benchmark's pure parts: percentiles, summaries, recall, and the deterministic corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.corpus import derive_queries, load_corpus, load_queries, synthetic_corpus
from bench.ingest import steady_rate
from bench.search import default_tenant
from bench.stats import percentile, rate, recall_at_k, summarize


@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 99, 100])
def test_percentile_matches_numpy_linear(q: float) -> None:
    values = [float(v) for v in np.random.default_rng(7).exponential(20.0, size=137)]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_small_and_invalid_inputs() -> None:
    assert percentile([5.0], 99) == 5.0
    assert percentile([1.0, 2.0], 50) == 1.5
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # unsorted input
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summary() -> None:
    summary = summarize([float(v) for v in range(1, 101)])
    assert (summary.n, summary.min, summary.max, summary.mean) == (100, 1.0, 100.0, 50.5)
    assert summary.p50 == pytest.approx(50.5)
    assert summary.p99 == pytest.approx(99.01)
    assert summary.to_dict(1)["p99"] == 99.0
    with pytest.raises(ValueError):
        summarize([])


def test_recall_and_rate() -> None:
    assert recall_at_k(["a", "b", "c"], ["a", "b", "c"], 3) == 1.0
    assert recall_at_k(["a", "x", "y", "b"], ["a", "b"], 2) == 0.5  # only the approximate top-2 counts
    assert recall_at_k(["c", "b", "a"], ["a", "b", "c"], 3) == 1.0  # order does not matter
    assert recall_at_k([], [], 10) == 1.0
    assert rate(100, 4.0) == 25.0 and rate(5, 0.0) == 0.0


def test_steady_rate_stays_below_capacity() -> None:
    assert steady_rate(13.0) == 6.5
    assert steady_rate(1000.0) == 50.0
    assert steady_rate(0.1) == 0.5


def test_synthetic_corpus_is_deterministic_and_extends() -> None:
    first = synthetic_corpus(50)
    assert first == synthetic_corpus(50)
    assert synthetic_corpus(80)[:50] == first  # a longer corpus extends a shorter one
    assert synthetic_corpus(10, start=50) == synthetic_corpus(60)[50:]
    assert len({doc.id for doc in synthetic_corpus(500)}) == 500
    assert synthetic_corpus(50, seed=1) != first
    for doc in first:
        assert doc.title and 20 <= len(doc.text.split()) <= 200
        assert doc.metadata["topic"]
        event = doc.event("bench-x")
        assert (event["tenant"], event["id"], event["version"]) == ("bench-x", doc.id, 1)


def test_derived_queries_are_deterministic_words_of_the_texts() -> None:
    texts = [doc.text for doc in synthetic_corpus(30)]
    queries = derive_queries(texts, 25)
    assert queries == derive_queries(texts, 25)
    assert len(queries) == 25
    for query in queries:
        assert 1 <= len(query.split()) <= 8
        assert any(query in text for text in texts)
    with pytest.raises(ValueError):
        derive_queries(["", "  "], 3)


def test_beir_corpus_and_queries(tmp_path: Path) -> None:
    rows = [{"_id": "d1", "title": "One", "text": "first text"}, {"_id": "d2", "text": ""},
            {"_id": "d3", "title": "", "text": "third text"}]
    (tmp_path / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    queries = [json.dumps({"_id": "q1", "text": "what is first"}), "", json.dumps({"_id": "q2", "text": "x"})]
    (tmp_path / "queries.jsonl").write_text("\n".join(queries) + "\n")
    docs = load_corpus(tmp_path, 10)
    assert [(d.id, d.title, d.text) for d in docs] == [("d1", "One", "first text"), ("d3", "", "third text")]
    assert load_corpus(tmp_path, 1)[0].id == "d1"
    assert load_queries(tmp_path, 10) == ["what is first", "x"]
    assert load_queries(tmp_path / "queries.jsonl", 1) == ["what is first"]
    plain = tmp_path / "plain.txt"
    plain.write_text("first query\nsecond query\n")
    assert load_queries(plain, 5) == ["first query", "second query"]


def test_default_search_tenant(tmp_path: Path) -> None:
    assert default_tenant(None, 2000) == "bench-search-synthetic-2000"
    (tmp_path / "SciFact Dev").mkdir()
    assert default_tenant(tmp_path / "SciFact Dev", 500) == "bench-search-scifact-dev-500"


def test_bounded_runs_keep_their_limit_and_load_counts_errors() -> None:
    import asyncio

    import httpx

    from bench.gateway import run_load
    from bench.runtime import run_bounded

    in_flight, peak, order = 0, 0, []

    def call(i: int):  # type: ignore[no-untyped-def]
        async def run() -> None:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            order.append(i)
            await asyncio.sleep(0.01)
            in_flight -= 1
        return run

    asyncio.run(run_bounded([call(i) for i in range(10)], 3))
    assert peak == 3 and order == list(range(10))

    async def fails() -> None:
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        asyncio.run(run_bounded([fails], 2))

    async def ok() -> str | None:
        return None

    async def refused() -> str | None:
        raise httpx.ConnectError("refused")

    async def answered_429() -> str | None:
        return "429"
    advanced: list[int] = []
    calls = [ok, refused, answered_429, ok, answered_429]
    result = asyncio.run(run_load(calls, 2, lambda: advanced.append(1)))
    assert (len(result.latencies_ms), result.errors, len(advanced)) == (2, 3, 5)
    assert result.to_dict()["errors_by_status"] == {"429": 2, "ConnectError": 1}


def test_a_bench_key_fits_the_whole_run(tmp_path: Path) -> None:
    from bench.gateway import GatewayConfig, requests_of_a_run
    from cli.bench import bench_key
    from core.api_keys import load_keys
    from core.config import Settings

    settings = Settings(state_dir=tmp_path)
    requests = requests_of_a_run(GatewayConfig(requests=300))
    assert requests >= 2 * 300 + 20
    key = bench_key(settings, None, "gateway", "default", ["publish", "search"], requests)
    [record] = load_keys(settings.api_key_store)
    assert key.startswith("fw_") and record.key_id == "bench-gateway" and record.tenant == "default"
    assert record.burst is not None and record.burst >= requests
    assert bench_key(settings, "given", "gateway", "default", ["search"], requests) == "given"
