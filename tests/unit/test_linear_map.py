"""The linear-map recipe: its training examples, its training and the model it saves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.base_model import base_model_dir
from core.config import Settings
from core.training.dataset import Example, TrainingDataset
from core.training.linear_map import (
    LinearMapConfig,
    MapExamples,
    attach_map,
    map_examples,
    train_linear_map,
    train_map,
)
from core.training.runtime import load_model


def test_examples_share_texts_and_the_corpus_joins_them() -> None:
    data = TrainingDataset(
        triples=[Example("q1", "a", "b")], pairs=[Example("q1", "c"), Example("q2", "a")],
        corpus={"t": {"x": "b", "y": "z"}})
    examples = map_examples(data)
    assert examples.queries == ["q1", "q2"] and examples.texts == ["a", "b", "c", "z"]
    assert examples.pairs == [(0, 0), (0, 2), (1, 0)]
    assert examples.positives == {0: frozenset({0, 2}), 1: frozenset({0})}


def test_the_map_ranks_each_positive_above_the_corpus() -> None:
    rng = np.random.default_rng(0)

    def unit(rows: np.ndarray) -> np.ndarray:
        return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)

    # Every query and every other text share one strong direction (dimension 0) that says
    # nothing: with the identity the other texts outrank each query's positive.
    positives = unit(np.hstack([np.zeros((40, 1)), rng.normal(size=(40, 15))]))
    shared = np.eye(16)[0]
    others = unit(0.9 * shared + 0.1 * np.hstack([np.zeros((160, 1)), rng.normal(size=(160, 15))]))
    texts = np.vstack([positives, others])
    queries = unit(0.9 * shared + 0.3 * positives)
    pairs = [(i, i) for i in range(40)]
    examples = MapExamples([f"q{i}" for i in range(40)], [f"t{i}" for i in range(200)], pairs,
                           {i: frozenset({t}) for i, t in pairs})

    def top1(weight: np.ndarray) -> float:
        q = queries @ weight
        t = texts @ weight
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        t /= np.linalg.norm(t, axis=1, keepdims=True)
        return float(np.mean(np.argmax(q @ t.T, axis=1) == np.array([t for _, t in pairs])))

    weight, losses = train_map(queries, texts, examples, LinearMapConfig(epochs=60, learning_rate=1e-2))
    assert top1(np.eye(16, dtype=np.float32)) == 0.0
    assert top1(weight) > 0.5 and losses[-1] < losses[0]
    # Held near the identity, the same training moves the map less.
    held, _ = train_map(queries, texts, examples, LinearMapConfig(epochs=60, learning_rate=1e-2,
                                                                   identity_weight=1.0))
    eye = np.eye(16, dtype=np.float32)
    assert np.linalg.norm(held - eye) < 0.5 * np.linalg.norm(weight - eye)


def test_the_saved_model_maps_queries_and_items_and_a_second_map_folds_into_the_first(tmp_path: Path) -> None:
    base = load_model(base_model_dir(Settings()), "cpu")
    texts = ["a pet that purrs", "the stock market fell"]
    plain = base.encode(texts, normalize_embeddings=True)
    rng = np.random.default_rng(1)
    first = np.eye(384, dtype=np.float32) + 0.05 * rng.normal(size=(384, 384)).astype(np.float32)
    second = np.eye(384, dtype=np.float32) + 0.05 * rng.normal(size=(384, 384)).astype(np.float32)

    def expected(weight: np.ndarray) -> np.ndarray:
        mapped = plain @ weight
        return mapped / np.linalg.norm(mapped, axis=1, keepdims=True)

    attach_map(base, first).save(str(tmp_path / "one"))
    one = load_model(tmp_path / "one", "cpu")
    assert np.allclose(one.encode(texts), expected(first), atol=1e-5)
    attach_map(one, second).save(str(tmp_path / "two"))
    two = load_model(tmp_path / "two", "cpu")
    assert len(list(two)) == len(list(one))  # folded: still one map
    assert np.allclose(two.encode(texts), expected(first @ second), atol=1e-4)


def test_a_run_saves_a_model_that_ranks_its_positive_first(tmp_path: Path) -> None:
    corpus = {f"d{i}": f"a note about topic number {i}" for i in range(30)}
    data = TrainingDataset(pairs=[Example("zorblat", corpus["d7"]), Example("quindle", corpus["d3"])],
                           corpus={"t": corpus})
    calls: list[tuple[int, int]] = []
    result = train_linear_map(base_model_dir(Settings()), tmp_path, data,
                              LinearMapConfig(epochs=40, learning_rate=1e-2, encode_batch_size=8),
                              lambda done, total: calls.append((done, total)))
    model = load_model(tmp_path, "cpu")
    items = model.encode(list(corpus.values()))
    for query, item in (("zorblat", 7), ("quindle", 3)):
        assert int(np.argmax(items @ model.encode(query))) == item
    assert result.steps == 40 and result.last_loss < result.mean_loss
    # Progress: 1 batch of queries and 4 of the 32 texts embedded, then 40 steps.
    assert calls == [(n, 45) for n in range(1, 46)]
