"""The quality benchmark's data handling and scoring, and its client's patience with 429s."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from rich.progress import Progress

from bench.beir import (
    clicks_for,
    judged_metrics,
    ndcg,
    paired_change,
    read_dataset,
    read_qrels,
    recall,
    split_held_out,
)
from bench.chunk_quality import best_chunk_scores, ndcg_at_10, ndcg_by_query
from bench.finetune_split import mined_examples, sweep_maps
from bench.quality import Api, QualityConfig, QualityError, QualityRun, changes
from core.datasets import parse
from core.training.dataset import Example, TrainingDataset
from core.training.linear_map import LinearMapConfig
from core.training.mining import MiningConfig
from gateway.bodies import TrainingRunRequest


def write_beir(root: Path, docs: int = 8) -> Path:
    (root / "qrels").mkdir(parents=True)
    with (root / "corpus.jsonl").open("w") as f:
        for i in range(docs):
            f.write(json.dumps({"_id": f"d{i}", "title": f"T{i}", "text": f"text {i}"}) + "\n")
    with (root / "queries.jsonl").open("w") as f:
        for q in ("1", "2", "10", "3", "4"):
            f.write(json.dumps({"_id": q, "text": f"query {q}"}) + "\n")
    (root / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n10\td1\t1\n2\td2\t1\n2\td3\t2\n1\td0\t1\n1\tgone\t1\n9\td4\t1\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n3\td5\t1\n4\td6\t0\n")
    return root


def test_a_dataset_keeps_queries_with_a_text_and_a_judged_document(tmp_path: Path) -> None:
    data = read_dataset(write_beir(tmp_path))
    assert list(data.train) == ["1", "2", "10"]  # numeric order; query 9 has no text
    assert data.train["1"] == {"d0": 1}  # "gone" is not in the corpus
    assert data.train["2"] == {"d2": 1, "d3": 2}
    assert data.test == {"3": {"d5": 1}}  # a grade of 0 is not a judgement
    assert data.summary() == {"documents": 8, "train_queries": 3, "test_queries": 1,
                              "train_judgements": 4, "test_judgements": 1}


def test_a_cut_corpus_keeps_every_judged_document(tmp_path: Path) -> None:
    data = read_dataset(write_beir(tmp_path), max_docs=6, max_train=2)
    ids = [d.id for d in data.docs]
    assert len(ids) == 6 and {"d0", "d2", "d3", "d5"} <= set(ids)
    assert list(data.train) == ["1", "2"] and set(data.queries) == {"1", "2", "3"}
    with pytest.raises(ValueError, match="below the 5 documents"):
        read_dataset(tmp_path, max_docs=4)


def test_a_folder_without_qrels_is_named(tmp_path: Path) -> None:
    write_beir(tmp_path)
    (tmp_path / "qrels" / "test.tsv").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing qrels/test.tsv"):
        read_dataset(tmp_path)


def test_bad_qrels_rows_name_their_line(tmp_path: Path) -> None:
    path = tmp_path / "q.tsv"
    path.write_text("query-id\tcorpus-id\tscore\n1\td1\tmany\n")
    with pytest.raises(ValueError, match=r"q.tsv:2: score 'many'"):
        read_qrels(path)


def test_graded_ndcg_recall_and_clicks() -> None:
    judged = {"a": 2, "b": 1}
    assert ndcg(["a", "b", "x"], judged, 10) == pytest.approx(1.0)
    swapped = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert ndcg(["b", "a"], judged, 10) == pytest.approx(swapped)
    assert ndcg(["x"] * 10 + ["a"], judged, 10) == 0.0
    assert recall(["x", "b"], judged, 100) == 0.5
    assert clicks_for(["x", "b", "y", "a"], judged) == [("b", 2), ("a", 4)]
    metrics = judged_metrics({"q1": ["a", "b"]}, {"q1": judged, "q2": {"c": 1}})
    assert metrics == {"ndcg@10": 0.5, "recall@100": 0.5}  # q2 was never answered: a miss


def test_the_client_waits_out_429_and_names_other_errors() -> None:
    answers = iter([httpx.Response(429, headers={"Retry-After": "0"}),
                    httpx.Response(200, json={"ok": True}),
                    httpx.Response(422, json={"title": "k: at most 100"})])

    async def scenario() -> None:
        transport = httpx.MockTransport(lambda request: next(answers))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            api = Api(client)
            assert await api.json("GET", "/v1/models") == {"ok": True}
            with pytest.raises(QualityError, match=r"POST /v1/search answered 422: .*at most 100"):
                await api.call("POST", "/v1/search")

    asyncio.run(scenario())


def test_evaluation_asks_as_users_do_k10_for_ndcg_and_k100_for_recall_in_both_modes(tmp_path: Path) -> None:
    """nDCG@10 comes from the k=10 answer and Recall@100 from the k=100 answer, per mode: a
    search that finds the relevant document only when asked for 100 scores 0 nDCG@10."""
    data = read_dataset(write_beir(tmp_path))
    asked: list[tuple[str, int]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        asked.append((body["mode"], body["k"]))
        found = body["k"] == 100 or body["mode"] == "hybrid"
        results = [{"id": "d5"}] if found and body["query"] == "query 3" else [{"id": "d0"}]
        return httpx.Response(200, json={"results": results, "model_version": "1"})

    async def scenario() -> dict[str, Any]:
        transport = httpx.MockTransport(answer)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            run = QualityRun(Api(client), data, "t", QualityConfig(), Progress(disable=True))
            return await run.evaluate("base", data.test)

    report = asyncio.run(scenario())
    assert sorted(set(asked)) == [("hybrid", 10), ("hybrid", 100), ("vector", 10), ("vector", 100)]
    assert report["modes"]["vector"]["ndcg@10"] == 0.0
    assert report["modes"]["vector"]["ndcg@10_at_k100"] == 1.0
    assert report["modes"]["vector"]["recall@100"] == 1.0
    assert report["modes"]["hybrid"]["ndcg@10"] == 1.0
    assert report["ndcg@10"] == report["modes"]["vector"]["ndcg@10"]
    assert report["answered_by"] == {"1": 4}
    # Per query, for the paired standard error of a change (query 4 judges nothing relevant).
    assert report["modes"]["hybrid"]["ndcg@10_by_query"] == {"3": 1.0}
    assert report["modes"]["vector"]["ndcg@10_by_query"] == {"3": 0.0}


def test_the_change_by_mode_carries_the_paired_standard_error() -> None:
    def evaluation(vector: list[float], hybrid: list[float]) -> dict[str, Any]:
        modes = {mode: {"ndcg@10": sum(scores) / 4, "recall@100": 1.0,
                        "ndcg@10_by_query": dict(zip("abcd", scores, strict=True))}
                 for mode, scores in (("vector", vector), ("hybrid", hybrid))}
        return {**modes["vector"], "modes": modes}

    change = changes(evaluation([0.5, 0.5, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]),
                     evaluation([1.0, 0.5, 0.5, 1.0], [1.0, 1.0, 1.0, 1.0]))
    assert change["change"] == {"ndcg@10": 0.25, "recall@100": 0.0}
    assert change["change_by_mode"]["vector"] == {
        "ndcg@10": 0.25, "recall@100": 0.0, "ndcg@10_standard_error": 0.1443}
    assert change["change_by_mode"]["hybrid"]["ndcg@10_standard_error"] == 0.0


def test_held_out_queries_are_spread_through_the_set_and_never_trained_on() -> None:
    qrels = {str(q): {f"d{q}": 1} for q in range(1, 22)}
    kept, held = split_held_out(qrels, 1 / 7)
    assert list(held) == ["7", "14", "21"]
    assert kept.keys() | held.keys() == qrels.keys() and not kept.keys() & held.keys()
    assert split_held_out(qrels, 0) == (qrels, {})


def test_judgments_source_uploads_a_train_and_a_held_out_dataset_and_trains_on_them_alone(
    tmp_path: Path,
) -> None:
    """The uploads are what the platform's own parser accepts, every train judgement is in one of
    them, and the training request names them instead of sessions."""
    data = read_dataset(write_beir(tmp_path))
    uploads: dict[str, Any] = {}
    training: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if request.url.path == "/v1/datasets":
            parsed = parse(body["format"], body["judgments"], None, None)
            uploads[body["name"]] = parsed
            return httpx.Response(201, json={"name": body["name"], "stats": parsed.stats})
        training.append(body)
        return httpx.Response(202, json={"task_id": "run-1"})

    async def scenario() -> dict[str, Any]:
        transport = httpx.MockTransport(answer)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            config = QualityConfig(source="judgments", held_out_fraction=1 / 3)
            run = QualityRun(Api(client), data, "t", config, Progress(disable=True))
            uploaded = await run.upload_judgments()
            run.follow = lambda task_id, label: asyncio.sleep(0, {"id": task_id})  # type: ignore[method-assign]
            await run.train(datetime.now(UTC), 0, uploaded)
            return uploaded

    uploaded = asyncio.run(scenario())
    train, held = uploaded["train"]["name"], uploaded["eval"]["name"]
    assert {(j.query_id, j.item_id, j.grade) for name in (train, held) for j in uploads[name].judgments} == {
        ("1", "d0", 1.0), ("2", "d2", 1.0), ("2", "d3", 2.0), ("10", "d1", 1.0)}
    assert {j.query_id for j in uploads[held].judgments} == {"10"}
    assert uploads[train].judgments[0].query == "query 1"
    assert uploaded["train"]["judgments"] == 3 and uploaded["eval"]["queries"] == 1
    assert training[0]["use_sessions"] is False
    assert training[0]["datasets"] == [train] and training[0]["eval_dataset"] == held
    TrainingRunRequest.model_validate(training[0])


def test_an_item_scores_its_best_chunk() -> None:
    queries = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    chunks = np.array([[0.6, 0.8], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    scores = best_chunk_scores(queries, chunks, np.array([0, 0, 1]), 3)
    assert scores[:, :2].tolist() == [[1.0, 0.0], [0.800000011920929, 1.0]]
    assert np.isneginf(scores[:, 2]).all()  # a document without chunks never ranks


def test_each_query_is_scored_on_its_own_row() -> None:
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8]], dtype=np.float32)
    qrels = {"a": {"d0": 1}, "b": {"d1": 1}}
    per_query = ndcg_by_query(scores, ["d0", "d1", "d2"], ["a", "b"], qrels)
    # a ranks d0 first; b ranks d2, d1, d0: its one relevant item second.
    assert per_query == {"a": 1.0, "b": pytest.approx(1 / math.log2(3))}
    assert ndcg_at_10(scores, ["d0", "d1", "d2"], ["a", "b"], qrels) == round((1 + 1 / math.log2(3)) / 2, 4)


def test_each_judged_pair_gets_the_negative_the_platform_would_mine() -> None:
    docs = ["d0", "d1", "d2", "d3"]
    scores = np.array([
        [0.90, 0.99, 0.50, 0.40],  # q0: d1 scores above 0.95 of the positive's 0.90, so d2 is mined
        [0.90, 0.88, 0.87, 0.86],  # q1: every candidate is too close to the positive: a pair only
        [0.10, 0.20, 0.90, 0.30],  # q2: judged d2 and d3, never each other's negative
    ], dtype=np.float32)
    qrels = {"q0": {"d0": 1}, "q1": {"d0": 1, "gone": 1}, "q2": {"d2": 1, "d3": 1}}
    queries = {"q0": "zero", "q1": "one", "q2": "two"}
    triples, pairs, skipped = mined_examples(
        ["q0", "q1", "q2"], qrels, queries, scores, docs, lambda qi, doc: f"{docs[doc]}@{qi}", MiningConfig())
    assert triples == [Example("zero", "d0@0", "d2@0"), Example("two", "d2@2", "d1@2"),
                       Example("two", "d3@2", "d1@2")]
    assert pairs == [Example("one", "d0@1")]  # "gone" is not in the corpus: no example
    assert skipped == 1 + 3
    # Sessions showing one result click only what ranks first: q0's d0 and q2's d3 were not shown.
    shown = mined_examples(["q0", "q1", "q2"], qrels, queries, scores, docs,
                           lambda qi, doc: f"{docs[doc]}@{qi}", MiningConfig(), shown_k=1)
    assert shown[:2] == ([Example("two", "d2@2", "d1@2")], [Example("one", "d0@1")])
    two_each = mined_examples(["q0"], qrels, queries, scores, docs, lambda qi, doc: f"{docs[doc]}@{qi}",
                              MiningConfig(per_pair=2))
    assert two_each[0] == [Example("zero", "d0@0", "d2@0"), Example("zero", "d0@0", "d3@0")]


def test_a_change_is_reported_with_its_paired_standard_error() -> None:
    before = {"a": 0.5, "b": 0.5, "c": 0.0, "d": 1.0}
    after = {"a": 1.0, "b": 0.5, "c": 0.5, "d": 1.0}  # per query: +0.5, 0, +0.5, 0
    assert paired_change(before, after) == {"change": 0.25, "standard_error": 0.1443}  # sqrt(1/12) / 2
    assert paired_change(before, before) == {"change": 0.0, "standard_error": 0.0}


def test_a_map_sweep_trains_one_map_per_variant_on_one_embedding() -> None:
    rng = np.random.default_rng(0)
    table: dict[str, np.ndarray] = {}
    embedded: list[int] = []

    def encode(texts: list[str]) -> np.ndarray:
        embedded.append(len(texts))
        rows = [table.setdefault(t, rng.normal(size=8).astype(np.float32)) for t in texts]
        return np.array([r / np.linalg.norm(r) for r in rows], dtype=np.float32)

    data = TrainingDataset(pairs=[Example(f"q{i}", f"p{i}") for i in range(6)],
                           corpus={"": {f"c{i}": f"c{i}" for i in range(10)}})
    chunks = encode([f"c{i}" for i in range(10)])
    embedded.clear()
    seen: list[tuple[np.ndarray, np.ndarray]] = []

    def score(mapped: Callable[[list[str]], np.ndarray], chunk_vectors: np.ndarray
              ) -> dict[str, dict[str, float]]:
        seen.append((mapped(["q0"]), chunk_vectors))
        return {"split": {"q0": float(np.argmax(mapped(["q0"]) @ mapped(["p0", "c0", "c1"]).T) == 0)}}

    config = LinearMapConfig(batch_size=3, learning_rate=0.05)
    variants = [replace(config, epochs=1), replace(config, epochs=4),
                replace(config, epochs=4, identity_weight=10.0)]
    found = sweep_maps(encode, chunks, data, variants, score)
    assert list(found) == ["1 epochs, identity 0", "4 epochs, identity 0", "4 epochs, identity 10"]
    assert set(found["4 epochs, identity 0"]) == {"split"}
    # The queries, then the positives and the corpus, embedded once for every variant.
    assert embedded[:2] == [6, 16] and embedded.count(16) == 1
    for _, chunk_vectors in seen:
        assert np.allclose(np.linalg.norm(chunk_vectors, axis=1), 1.0, atol=1e-5)
        assert not np.allclose(chunk_vectors, chunks)  # the map moved them
    assert not np.allclose(seen[0][0], seen[1][0])  # four epochs are not one
    # Held near the identity, the map moves the vectors less.
    assert np.abs(seen[2][1] - chunks).max() < np.abs(seen[1][1] - chunks).max()
