"""Pure parts of `bench fill`, `bench search --under-ingest` and `bench gpu`: the fill's
deterministic texts, slicing and argument checks; the under-ingest ratio; the GPU check's
argument handling and its refusal without CUDA."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from bench.corpus import Doc
from bench.fill import FillConfig, validate
from bench.fill_texts import documents, fill_docs, repeated_corpus, slices
from bench.gpu import GpuConfig, cuda_problem
from bench.gpu import validate as validate_gpu
from bench.under_ingest import UnderIngestConfig, ratio
from bench.under_ingest import validate as validate_under_ingest
from cli.main import app

runner = CliRunner()


def test_fill_docs_are_deterministic_and_extend() -> None:
    small, large = fill_docs(50), fill_docs(120)
    assert small == large[:50]
    assert fill_docs(50, seed=1) != small
    assert [doc.id for doc in fill_docs(3, start=7)] == ["fill-000007", "fill-000008", "fill-000009"]
    assert len({doc.id for doc in large}) == 120
    assert all(doc.text.endswith(".") and doc.metadata["topic"] for doc in large)


def test_repeated_corpus_gives_new_ids_each_round() -> None:
    corpus = [Doc("a", "A", "one"), Doc("b", "B", "two")]
    docs = repeated_corpus(corpus, 5)
    assert [doc.id for doc in docs] == ["a", "b", "a~1", "b~1", "a~2"]
    assert [doc.text for doc in docs] == ["one", "two", "one", "two", "one"]
    with pytest.raises(ValueError, match="no documents"):
        repeated_corpus([], 3)


def test_slices_cover_the_range_once() -> None:
    assert list(slices(11, 5)) == [(0, 5), (5, 10), (10, 11)]
    assert list(slices(0, 5)) == []
    with pytest.raises(ValueError):
        list(slices(3, 0))


@pytest.mark.parametrize(("config", "field"), [
    (FillConfig(tenant=""), "--tenant"),
    (FillConfig(tenant="*"), "--tenant"),
    (FillConfig(tenant="t", n=0), "--n"),
    (FillConfig(tenant="t", index="later"), "--index"),  # type: ignore[arg-type]
])
def test_fill_arguments_are_checked(config: FillConfig, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        validate(config)
    with pytest.raises(ValueError, match="--n"):
        documents(0)


def test_fill_cli_refuses_a_bad_index_strategy_before_touching_the_stack() -> None:
    result = runner.invoke(app, ["bench", "fill", "--tenant", "t", "--index", "later"])
    assert result.exit_code == 2
    assert "--index" in result.output
    assert runner.invoke(app, ["bench", "fill", "--n", "5"]).exit_code == 2  # --tenant is required


def test_under_ingest_ratio_and_arguments() -> None:
    assert ratio(30.0, 15.0) == 2.0
    assert ratio(10.0, 0.0) is None
    with pytest.raises(ValueError, match="--load-n"):
        validate_under_ingest(UnderIngestConfig(load_n=0))
    with pytest.raises(ValueError, match="--queries"):
        validate_under_ingest(UnderIngestConfig(queries=0))


def test_gpu_refuses_without_cuda_naming_it() -> None:
    problem = cuda_problem(False, "2.5.0+cpu", None)
    assert problem is not None and problem.startswith("no CUDA device")
    assert "built without CUDA" in problem
    assert "built for CUDA 12.4" in (cuda_problem(False, "2.5.0", "12.4") or "")
    assert cuda_problem(True, "2.5.0", "12.4") is None


@pytest.mark.parametrize(("change", "field"), [
    ({"texts": 0}, "--texts"), ({"batch": 0}, "--batch"), ({"train_steps": 1}, "--train-steps"),
    ({"train_batch": 1}, "--train-batch"), ({"timeout_s": 0}, "--timeout"),
])
def test_gpu_arguments_are_checked(change: dict[str, float], field: str) -> None:
    validate_gpu(GpuConfig())
    with pytest.raises(ValueError, match=field):
        validate_gpu(GpuConfig(**change))  # type: ignore[arg-type]


@pytest.mark.parametrize("args", [["--texts", "0"], ["--train-steps", "1"], ["--batch", "x"]])
def test_gpu_cli_rejects_bad_arguments(args: list[str]) -> None:
    assert runner.invoke(app, ["bench", "gpu", *args]).exit_code == 2
