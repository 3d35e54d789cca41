"""POST /v1/embeddings through the official `openai` client, pointed at the real gateway."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator

import httpx
import numpy as np
import openai
import pytest
import pytest_asyncio

from core.adapters.pgvector import PgVectorStore
from core.adapters.triton_embedder import TritonEmbedder
from core.api_keys import hash_key
from core.base_model import default_base_model_dir
from core.bootstrap import ensure_initial_version
from core.chunking import tokenizer_for
from core.config import REPO_ROOT, Settings
from infra.process import Component
from infra.services import gateway_service
from tests.conftest import _run

pytestmark = pytest.mark.e2e

KEYS = {
    "search-a": ("tenant-a", ["search"]),
    "publish-a": ("tenant-a", ["publish"]),
    "search-b": ("tenant-b", ["search"]),
}
SECRET = {name: f"key-{name}-{uuid.uuid4().hex}" for name in KEYS}
TEXTS = ["How do I reset my password?", "Grüße aus Köln ✓", "a"]
MAX_INPUTS = 4


@pytest_asyncio.fixture(scope="module")
async def active_version(store: PgVectorStore, embedder: TritonEmbedder) -> str:
    await ensure_initial_version(store, embedder)  # what the indexer does on a fresh database
    version = await store.active_version("tenant-a")
    assert version is not None
    return version


@pytest.fixture(scope="module")
def gateway(
    test_settings: Settings, postgres: Component, triton: Component, active_version: str,
) -> Iterator[str]:
    records = [{"key_id": name, "key_sha256": hash_key(SECRET[name]), "tenant": tenant, "scopes": scopes}
               for name, (tenant, scopes) in KEYS.items()]
    settings = test_settings.model_copy(update={
        "api_keys_json": json.dumps(records), "gateway_embeddings_max_inputs": MAX_INPUTS,
        "gateway_embeddings_max_tokens": 300,
    })
    for _ in _run(gateway_service(settings)):
        yield settings.gateway_url


def client(gateway: str, key: str = "search-a") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key=SECRET.get(key, key), max_retries=0, timeout=60)


async def test_float_and_base64_are_the_vectors_search_uses(
    gateway: str, embedder: TritonEmbedder, active_version: str,
) -> None:
    api = client(gateway)
    as_float = api.embeddings.create(input=TEXTS, model="active", encoding_format="float")
    as_base64 = api.embeddings.create(input=TEXTS, model="active", encoding_format="base64")
    # Without an encoding_format the client asks for base64 and decodes it itself.
    by_default = api.embeddings.create(input=TEXTS, model="active")
    floats = np.array([d.embedding for d in as_float.data], dtype=np.float32)
    decoded = np.stack([np.frombuffer(base64.b64decode(d.embedding), dtype="<f4")  # type: ignore[arg-type]
                        for d in as_base64.data])
    assert floats.shape == (len(TEXTS), 384) and [d.index for d in as_float.data] == [0, 1, 2]
    np.testing.assert_allclose(floats, decoded, atol=1e-6)
    np.testing.assert_allclose(floats, np.array([d.embedding for d in by_default.data]), atol=1e-6)

    # Search embeds its query with the same version through the same Triton model.
    searched = (await embedder.embed(TEXTS, active_version, lane="query")).vectors
    np.testing.assert_allclose(floats, searched, atol=1e-5)
    assert as_float.model == active_version

    tokens = sum(len(ids) for ids in tokenizer_for(default_base_model_dir())(TEXTS)["input_ids"])
    assert as_float.usage.prompt_tokens == as_float.usage.total_tokens == tokens


def test_one_string_a_version_number_and_an_alias(gateway: str, active_version: str) -> None:
    api = client(gateway)
    one = api.embeddings.create(input="hello", model=active_version)
    assert len(one.data) == 1 and len(one.data[0].embedding) == 384 and one.object == "list"
    # The registered model's name is an alias of `active` (whichever version that is in this run).
    via_alias = api.embeddings.create(input="hello", model="flywheel-embedder", encoding_format="float")
    assert via_alias.model == one.model == active_version
    np.testing.assert_allclose(one.data[0].embedding, via_alias.data[0].embedding, atol=1e-5)
    with pytest.raises(openai.NotFoundError, match="text-embedding-3-small"):
        api.embeddings.create(input="hello", model="text-embedding-3-small")


def test_limits_answer_4xx_naming_the_field_and_the_fix(gateway: str) -> None:
    api = client(gateway)
    with pytest.raises(openai.UnprocessableEntityError) as too_long:
        api.embeddings.create(input=["short", "word " * 300], model="active")
    assert "input[1]" in str(too_long.value) and "split the text" in str(too_long.value)
    with pytest.raises(openai.UnprocessableEntityError) as too_many:
        api.embeddings.create(input=["x"] * (MAX_INPUTS + 1), model="active")
    assert f"at most {MAX_INPUTS} per request" in str(too_many.value)

    raw = httpx.post(f"{gateway}/v1/embeddings", json={"input": [1, 2], "model": "active"},
                     headers={"Authorization": f"Bearer {SECRET['search-a']}"})
    assert raw.status_code == 422 and raw.headers["content-type"] == "application/problem+json"
    assert raw.json()["errors"][0]["field"] == "input" and "token arrays" in raw.json()["detail"]


def test_scope_key_and_tenant(gateway: str) -> None:
    with pytest.raises(openai.PermissionDeniedError, match="search"):
        client(gateway, "publish-a").embeddings.create(input="x", model="active")
    with pytest.raises(openai.AuthenticationError):
        client(gateway, "not-a-key").embeddings.create(input="x", model="active")
    # Another tenant's key is served by its own tenant's model; it sees nothing of tenant-a.
    other = client(gateway, "search-b").embeddings.create(input="x", model="active")
    assert len(other.data) == 1


def test_flywheel_embed_calls_the_gateway(gateway: str) -> None:
    def flywheel_embed(key: str, *texts: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli.main", "embed", "--url", gateway, "--api-key", SECRET[key], "--json",
             *texts], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, check=False)

    done = flywheel_embed("search-a", "hello", "world")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert [d["index"] for d in body["data"]] == [0, 1] and len(body["data"][0]["embedding"]) == 384
    refused = flywheel_embed("publish-a", "hello")
    assert refused.returncode == 1 and "403" in refused.stderr
