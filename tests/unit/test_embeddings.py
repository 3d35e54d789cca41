"""Embeddings for clients: model names, limits and the OpenAI-shaped bodies, over fakes."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pydantic
import pytest

from core.embeddings import (
    EmbeddingLimits,
    InputRejected,
    UnknownModel,
    check_limits,
    embed_for_client,
    resolve_version,
)
from gateway.bodies import EmbeddingsRequest
from gateway.routes.embeddings import encode_base64
from tests.unit.fakes import FakeEmbedder


class Versions:
    def __init__(self, rows: list[dict[str, Any]], active: str | None) -> None:
        self.rows, self.active = rows, active

    async def list_versions(self) -> list[dict[str, Any]]:
        return self.rows

    async def active_version(self) -> str | None:
        return self.active


VERSIONS = Versions([{"version": "1", "dim": 384}, {"version": "2", "dim": 384},
                     {"version": "3", "dim": 384, "tenant": "tenant-b"},
                     {"version": "4", "dim": 384, "status": "failed", "reason": "reindex: boom"}], active="2")


@pytest.mark.parametrize(("model", "expected"), [
    ("active", "2"), ("flywheel-embedder", "2"), ("base", "1"), ("1", "1"), ("v2", "2"), ("latest", "2"),
])
async def test_model_names_resolve_to_versions(model: str, expected: str) -> None:
    assert await resolve_version(model, "tenant-a", VERSIONS) == (expected, 384)


async def test_a_failed_version_is_refused_and_never_latest() -> None:
    with pytest.raises(UnknownModel, match="failed \\(reindex: boom\\)"):
        await resolve_version("4", "tenant-a", VERSIONS)
    assert await resolve_version("latest", "tenant-b", VERSIONS) == ("3", 384)


async def test_another_tenants_version_is_unknown() -> None:
    assert await resolve_version("3", "tenant-b", VERSIONS) == ("3", 384)
    with pytest.raises(UnknownModel, match="does not exist for this tenant"):
        await resolve_version("3", "tenant-a", VERSIONS)


@pytest.mark.parametrize("model", ["9", "text-embedding-3-small", "v", "²", "v٣"])
async def test_unknown_models_are_named(model: str) -> None:
    with pytest.raises(UnknownModel):
        await resolve_version(model, "tenant-a", VERSIONS)


async def test_nothing_active_yet() -> None:
    with pytest.raises(UnknownModel, match="no model version is active"):
        await resolve_version("active", "t", Versions([], None))


LIMITS = EmbeddingLimits(max_inputs=3, max_tokens=20, max_input_tokens=8)


@pytest.mark.parametrize(("texts", "counts", "field", "words"), [
    (["a"] * 4, [1] * 4, "input", "at most 3 per request"),
    (["a", "b"], [2, 9], "input[1]", "split the text"),
    (["a"], [9], "input", "at most 8 per input"),
    (["a", "b", "c"], [8, 8, 8], "input", "24 tokens in all"),
])
def test_limits_name_the_field_and_the_fix(
    texts: list[str], counts: list[int], field: str, words: str,
) -> None:
    with pytest.raises(InputRejected) as caught:
        check_limits(texts, counts, LIMITS)
    assert caught.value.field == field and words in caught.value.reason


class WordTokenizer:
    def __call__(self, texts: list[str], add_special_tokens: bool) -> dict[str, list[list[int]]]:
        return {"input_ids": [[0] * (len(t.split()) + 2) for t in texts]}


async def test_embedded_in_the_query_lane_with_token_counts() -> None:
    fake = FakeEmbedder()
    result = await embed_for_client(["two words", "three more words"], "2", WordTokenizer(), LIMITS, fake)
    assert fake.lanes == ["query"] and result.token_counts == [4, 5] and result.total_tokens == 9
    assert result.vectors.shape == (2, 8) and result.version == "2"


def test_base64_is_little_endian_float32() -> None:
    vector = np.array([0.5, -1.25, 3.0], dtype=np.float32)
    decoded = np.frombuffer(base64.b64decode(encode_base64(vector)), dtype="<f4")
    assert decoded.tolist() == vector.tolist()


def test_request_body_takes_a_string_or_a_list_of_strings() -> None:
    assert EmbeddingsRequest(input="hi", model="active").texts == ["hi"]
    assert EmbeddingsRequest(input=["a", "b"], model="1", encoding_format="base64").texts == ["a", "b"]
    for bad in ([1, 2, 3], [[1, 2]], [], "", ["a", ""], "a\ud800", ["ok", "\udfff"]):
        with pytest.raises(pydantic.ValidationError):
            EmbeddingsRequest(input=bad, model="active")
    with pytest.raises(pydantic.ValidationError):
        EmbeddingsRequest(input="a", model="active", encoding_format="int8")  # type: ignore[arg-type]


async def test_tokenizing_a_large_request_leaves_the_event_loop_free() -> None:
    """The gateway keeps answering (health checks, other requests) while a request's texts are
    tokenized: a tokenizer busy for 0.5 s never holds the event loop for 100 ms."""
    import asyncio
    import time

    class SlowTokenizer:
        def __call__(self, texts: list[str], add_special_tokens: bool) -> dict[str, list[list[int]]]:
            time.sleep(0.5)  # stands for CPU-bound tokenizing of a request at its limits
            return {"input_ids": [[101, 7, 102] for _ in texts]}

    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    limits = EmbeddingLimits(max_inputs=256, max_tokens=16384, max_input_tokens=256)
    result = await embed_for_client(["a text"] * 256, "1", SlowTokenizer(), limits, FakeEmbedder())
    stop.set()
    await ticking
    assert result.token_counts == [3] * 256
    assert max(gaps) < 0.1, f"the event loop was held for {max(gaps) * 1000:.0f} ms"
