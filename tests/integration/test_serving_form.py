"""The form Triton serves a version in (core/adapters/triton_model/forms.py), on the real server:
the version measured its candidates when Triton loaded it, wrote its decision and its quality
check beside itself, and what it serves stays within the guard of the in-process fp32 model
(nDCG@10 on the shipped check set within 0.005, cosine at least deploy_min_cosine)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from core.adapters.triton_repository import MODEL_PY, read_serving_decision, serving_dir
from core.adapters.triton_repository import version_dir as version_files
from core.base_model import default_base_model_dir
from core.config import Settings
from core.serving import version_model_name
from infra.process import Component

pytestmark = pytest.mark.integration

MAX_NDCG_DROP = 0.005


def _embed_with_triton(settings: Settings, texts: list[str], version: str = "1") -> np.ndarray:
    client = grpcclient.InferenceServerClient(settings.triton_grpc_url)
    try:
        vectors = []
        for start in range(0, len(texts), 16):  # requests below the max batch, as clients send
            batch = texts[start:start + 16]
            text = grpcclient.InferInput("TEXT", [len(batch), 1], "BYTES")
            text.set_data_from_numpy(np.array([[t.encode()] for t in batch], dtype=np.object_))
            result = client.infer(version_model_name(settings.triton_model_name, version), [text],
                                  model_version=version)
            out = result.as_numpy("EMBEDDING")
            assert out is not None
            vectors.append(out)
    finally:
        client.close()
    return np.vstack(vectors)


def _ndcg_at_10(queries: np.ndarray, docs: np.ndarray, relevant: list[list[int]]) -> float:
    scores = queries.astype(np.float64) @ docs.astype(np.float64).T
    total = 0.0
    for row, rel in zip(scores, relevant, strict=True):
        ranked = np.argsort(-row, kind="stable")[:10]
        dcg = sum(1.0 / np.log2(i + 2) for i, d in enumerate(ranked) if d in rel)
        idcg = sum(1.0 / np.log2(i + 2) for i in range(min(10, len(rel))))
        total += dcg / idcg
    return total / len(relevant)


def test_the_served_version_reports_its_form_and_check(triton: Component, test_settings: Settings) -> None:
    decision = read_serving_decision(test_settings.triton_repository, test_settings.triton_model_name, 1)
    assert decision is not None, "version 1 wrote no serving.json when Triton loaded it"
    assert decision["form"] in ("fp32", "bf16", "fp16", "onnx", "onnx-int8")
    assert decision["reason"].startswith(decision["form"])
    assert decision["precision"] == test_settings.triton_precision
    assert decision["device"] == "cpu" or decision["device"].startswith("cuda")
    measured = set(decision["texts_per_s"])
    assert "fp32" in measured and decision["form"] in measured
    if test_settings.triton_precision == "auto" and decision["device"] == "cpu":
        # fp32, bf16 and both ONNX Runtime forms, exported once into the version's work
        # directory, outside the model's directory (Triton would reload a changed version)
        assert measured == {"fp32", "bf16", "onnx", "onnx-int8"}, decision["refused"]
        onnx_dir = serving_dir(test_settings.triton_repository, test_settings.triton_model_name, 1) / "onnx"
        version_dir = version_files(test_settings.triton_repository, test_settings.triton_model_name, 1)
        assert not (version_dir / "onnx").exists() and not (version_dir / "serving.json").exists()
        assert (onnx_dir / "model.onnx").is_file() and (onnx_dir / "model_int8.onnx").is_file()
        assert decision["onnx_build"]["size_bytes"]["onnx"] == (onnx_dir / "model.onnx").stat().st_size
        assert decision["size_bytes_by_form"]["onnx-int8"] < decision["size_bytes_by_form"]["onnx"]
        assert decision["quality"]["onnx"]["min_cosine_to_fp32"] >= 0.99999  # the same model, in ONNX Runtime
    elif test_settings.triton_precision == "auto":
        assert len(measured) == 2  # fp32 and the GPU's fp16
    # every form refused says why (the guard, the speed rule, or what kept it from running)
    assert set(decision["refused"]) == {form for form, ok in decision["passed"].items() if not ok}
    assert all(speed > 0 for speed in decision["texts_per_s"].values())
    served = decision["quality"][decision["form"]]
    reference = decision["quality"]["fp32"]
    assert served["ndcg_at_10"] >= reference["ndcg_at_10"] - MAX_NDCG_DROP
    assert served["min_cosine_to_fp32"] >= test_settings.deploy_min_cosine
    assert decision["passed"][decision["form"]] is True
    assert decision["size_bytes"] > 1_000_000 and decision["check_set"]["documents"] >= 40
    assert decision["size_bytes"] == decision["size_bytes_by_form"][decision["form"]]
    assert decision["format"] == ("onnx" if decision["form"].startswith("onnx") else "pytorch")
    # The query instance timed the passed forms one short text at a time and serves the fastest.
    query = decision["query_lane"]
    assert decision["passed"][query["form"]] is True and query["version_form"] == decision["form"]
    assert set(query["median_ms_per_query"]) == set(query["candidates"])
    assert query["form"] == min(query["median_ms_per_query"], key=query["median_ms_per_query"].get)


def test_what_triton_serves_is_within_the_guard_of_fp32(triton: Component, test_settings: Settings) -> None:
    """The quality guard end to end: Triton's embeddings (whatever form it chose) against the
    model run in-process in fp32, on the check set shipped with the model."""
    from sentence_transformers import SentenceTransformer

    check = json.loads((MODEL_PY.parent / "check_set.json").read_text())
    docs = [d["text"] for d in check["documents"]]
    index = {d["id"]: i for i, d in enumerate(check["documents"])}
    queries = [q["text"] for q in check["queries"]]
    relevant = [[index[r] for r in q["relevant"]] for q in check["queries"]]
    served = _embed_with_triton(test_settings, queries + docs)
    model = SentenceTransformer(str(default_base_model_dir()), device="cpu", local_files_only=True)
    expected = model.encode(queries + docs, normalize_embeddings=True, convert_to_numpy=True)
    assert served.shape == expected.shape and served.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-3)
    cosines = np.sum(served * expected, axis=1)
    assert float(cosines.min()) >= test_settings.deploy_min_cosine, cosines.min()
    n = len(queries)
    served_ndcg = _ndcg_at_10(served[:n], served[n:], relevant)
    fp32_ndcg = _ndcg_at_10(expected[:n], expected[n:], relevant)
    assert served_ndcg >= fp32_ndcg - MAX_NDCG_DROP, (served_ndcg, fp32_ndcg)
