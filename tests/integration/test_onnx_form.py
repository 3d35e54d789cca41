"""The ONNX Runtime serving forms (core/adapters/triton_model/onnx_form.py) on the real base model,
in process, as the version's model.py runs them inside Triton: exported once per version and
found again on reload, the same embeddings as the SentenceTransformer (pooling and
normalisation included), and the quality guard refusing the int8 form with its reason."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import types
from typing import Any

import numpy as np
import pytest

from core.adapters.triton_repository import MODEL_FILES, MODEL_PY
from core.base_model import default_base_model_dir

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def st_model() -> Any:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(2)
    return SentenceTransformer(str(default_base_model_dir()), device="cpu", local_files_only=True)


@pytest.fixture(scope="module")
def version(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A version directory as the repository writer lays it out, its model.py loaded as Triton
    loads it (with a stand-in for Triton's logger module, the one thing outside the stub)."""
    directory = tmp_path_factory.mktemp("repo") / "3"
    directory.mkdir()
    for name in MODEL_FILES:
        shutil.copy2(MODEL_PY.parent / name, directory / name)
    shutil.copytree(default_base_model_dir(), directory / "model")
    backend = types.ModuleType("triton_python_backend_utils")
    backend.Logger = types.SimpleNamespace(log_info=print, log_warn=print)  # type: ignore[attr-defined]
    sys.modules.setdefault("triton_python_backend_utils", backend)
    spec = importlib.util.spec_from_file_location("triton_model_onnx_under_test", directory / "model.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_texts() -> list[str]:
    check = json.loads((MODEL_PY.parent / "check_set.json").read_text(encoding="utf-8"))
    return [q["text"] for q in check["queries"]] + [d["text"] for d in check["documents"]]


def test_the_onnx_files_are_built_once_per_version_and_embed_like_the_model(
    version: Any, st_model: Any,
) -> None:
    onnx_form = version.onnx_form
    assert onnx_form.unsupported(st_model) is None and onnx_form.pooling_mode(st_model) == "mean"
    built = onnx_form.build(st_model, version.WORK)
    assert built["cached"] is False and built["inputs"][0] == "input_ids"
    files = {form: version.WORK / path for form, path in built["files"].items()}
    assert set(files) == {"onnx", "onnx-int8"} and all(p.is_file() for p in files.values())
    assert built["size_bytes"]["onnx-int8"] < built["size_bytes"]["onnx"]
    stamps = {form: p.stat().st_mtime_ns for form, p in files.items()}
    again = onnx_form.build(st_model, version.WORK)  # a reload exports nothing
    assert again["cached"] is True and {f: p.stat().st_mtime_ns for f, p in files.items()} == stamps

    texts = [*_check_texts(), "x", "a text " * 400]  # one token and past max_seq_length too
    expected = st_model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    fp32 = onnx_form.OnnxEncoder(st_model, version.WORK, "onnx", 2).encode(texts, 16)
    assert fp32.shape == expected.shape and fp32.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(fp32, axis=1), 1.0, atol=1e-5)
    assert float(np.min(np.sum(fp32 * expected, axis=1))) > 0.99999
    int8 = onnx_form.OnnxEncoder(st_model, version.WORK, "onnx-int8", 2).encode(texts, 64)
    cosines = np.sum(int8 * expected, axis=1)
    assert float(cosines.mean()) > 0.98 and float(cosines.min()) > 0.9  # close, not exact
    assert onnx_form.OnnxEncoder(st_model, version.WORK, "onnx", 2).encode([], 8).shape == (0, 384)


def test_the_guard_refuses_the_int8_form_and_fp32_serves_with_the_reason(version: Any, st_model: Any) -> None:
    # A threshold no quantized form can meet: the guard must refuse it and say why.
    refused = version.measure_and_choose(st_model, "cpu", "onnx-int8", 1.0, 64).as_dict()
    assert refused["form"] == "fp32" and refused["passed"]["onnx-int8"] is False
    assert "onnx-int8:" in refused["reason"] and "min cosine to fp32" in refused["reason"]
    assert refused["format"] == "pytorch" and refused["quality"]["onnx-int8"]["min_cosine_to_fp32"] < 1.0
    assert refused["onnx_build"]["cached"] is True  # built by the test above, in this version


def test_a_named_onnx_form_is_served_with_its_format_and_size(version: Any, st_model: Any) -> None:
    decision = version.measure_and_choose(st_model, "cpu", "onnx", 0.999, 64).as_dict()
    assert decision["form"] == "onnx", decision["reason"]
    assert decision["format"] == "onnx" and decision["weights_dtype"] == "float32"
    onnx_bytes = (version.WORK / "onnx" / "model.onnx").stat().st_size
    assert decision["size_bytes"] == onnx_bytes == decision["size_bytes_by_form"]["onnx"]
    assert decision["size_bytes_by_form"]["fp32"] > 1_000_000
    assert decision["quality"]["onnx"]["min_cosine_to_fp32"] >= 0.99999
    assert set(decision["texts_per_s"]) == {"fp32", "onnx"}


def test_a_model_with_a_linear_map_has_an_onnx_form_that_applies_the_map(version: Any, st_model: Any) -> None:
    from core.training.linear_map import attach_map

    onnx_form = version.onnx_form
    rng = np.random.default_rng(3)
    weight = np.eye(384, dtype=np.float32) + 0.1 * rng.normal(size=(384, 384)).astype(np.float32)
    mapped = attach_map(st_model, weight)
    assert onnx_form.pooling_mode(mapped) == "mean" and onnx_form.unsupported(mapped) is None
    np.testing.assert_allclose(onnx_form.linear_map(mapped), weight, atol=1e-6)
    assert onnx_form.linear_map(st_model) is None
    texts = _check_texts()
    expected = mapped.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    # The transformer is the base's: the ONNX file built above serves it, the map after it.
    served = onnx_form.OnnxEncoder(mapped, version.WORK, "onnx", 2).encode(texts, 16)
    assert float(np.min(np.sum(served * expected, axis=1))) > 0.99999
    plain = st_model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    assert float(np.min(np.sum(plain * expected, axis=1))) < 0.99  # the map is not the identity
