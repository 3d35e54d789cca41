"""The local Triton server embeds exactly like sentence-transformers in process."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from core.adapters.triton_repository import lane_models, model_versions, version_dir
from core.base_model import default_base_model_dir
from core.config import Settings
from core.serving import version_model_name
from infra.process import Component

pytestmark = pytest.mark.integration

TEXTS = [
    "How do I reset my password?",
    "Kafka keeps the content topic compacted.",
    "pgvector stores embeddings next to the rows.",
    "Grüße aus Köln — ünïcödé ✓",
    "a",
]


def _embed_with_triton(settings: Settings, texts: list[str]) -> np.ndarray:
    client = grpcclient.InferenceServerClient(settings.triton_grpc_url)
    try:
        text = grpcclient.InferInput("TEXT", [len(texts), 1], "BYTES")
        text.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=np.object_))
        result = client.infer(version_model_name(settings.triton_model_name, 1), [text])
    finally:
        client.close()
    vectors = result.as_numpy("EMBEDDING")
    assert vectors is not None
    return vectors


def test_triton_embeddings_match_sentence_transformers(triton: Component, test_settings: Settings) -> None:
    from sentence_transformers import SentenceTransformer

    got = _embed_with_triton(test_settings, TEXTS)
    assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)

    model = SentenceTransformer(str(default_base_model_dir()), device="cpu", local_files_only=True)
    expected = model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    cosines = np.sum(got * expected, axis=1)
    assert np.all(cosines >= 0.999), cosines


def test_triton_serves_numeric_versions(triton: Component, test_settings: Settings) -> None:
    repo = test_settings.triton_repository
    versions = model_versions(repo, test_settings.triton_model_name)
    assert versions and versions[0] == 1
    # One Triton model per version in each lane; versions being placed are built aside in hidden
    # directories, never served.
    served = sorted(p.name for p in repo.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert served == sorted(lane_models(test_settings.triton_model_name, versions))
    assert (version_dir(repo, test_settings.triton_model_name, 1) / "model" / "model.safetensors").is_file()

    health = triton.check()
    assert health.healthy, health.detail
    client = httpclient.InferenceServerClient(test_settings.triton_http_url)
    try:
        assert client.is_model_ready(version_model_name(test_settings.triton_model_name, 1), "1")
    finally:
        client.close()
