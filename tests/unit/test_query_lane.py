"""The query lane: queries go to Triton with the higher priority, bulk work with the default
one, in requests smaller than the max batch; the model config declares the levels and sizes
instances and threads from the cores."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from tritonclient.utils import InferenceServerException

from core.adapters.triton_embedder import TritonEmbedder
from core.adapters.triton_repository import default_instance_count, model_config
from core.domain import SearchQuery
from core.search import search
from core.serving import BULK_PRIORITY, QUERY_PRIORITY, query_model_name, served_version, version_model_name
from tests.unit.fakes import FakeEmbedder, FakeStore


class _Result:
    def __init__(self, rows: int) -> None:
        self.rows = rows

    def as_numpy(self, name: str) -> np.ndarray:
        return np.ones((self.rows, 3), dtype=np.float32)


class _Client:
    def __init__(self, missing: frozenset[str] = frozenset()) -> None:
        self.requests: list[tuple[int, int]] = []  # (texts, priority)
        self.models: list[str] = []
        self.missing = missing  # models this server does not serve

    async def infer(self, model_name: str, inputs: list[Any], **options: Any) -> _Result:
        self.models.append(model_name)
        if model_name in self.missing:
            raise InferenceServerException(f"Request for unknown model: '{model_name}' is not found",
                                           status="StatusCode.NOT_FOUND")
        rows = int(inputs[0].shape()[0])
        self.requests.append((rows, options["priority"]))
        return _Result(rows)

    async def close(self) -> None:
        return None


@pytest_asyncio.fixture
async def embedder() -> tuple[TritonEmbedder, _Client]:
    # The gRPC aio client is made inside the event loop it will run in.
    triton = TritonEmbedder("127.0.0.1:1", "embedder", max_batch_size=64, request_size=16)
    client = _Client()
    triton._client = client  # type: ignore[assignment]
    return triton, client


async def test_bulk_goes_out_in_requests_smaller_than_the_max_batch(
    embedder: tuple[TritonEmbedder, _Client],
) -> None:
    triton, client = embedder
    result = await triton.embed([f"text {i}" for i in range(70)], "1")
    assert result.vectors.shape == (70, 3)
    assert sorted(rows for rows, _ in client.requests) == [6, 16, 16, 16, 16]
    assert {priority for _, priority in client.requests} == {BULK_PRIORITY}


async def test_queries_go_to_the_query_model_and_bulk_to_the_bulk_model(
    embedder: tuple[TritonEmbedder, _Client],
) -> None:
    triton, client = embedder
    await triton.embed(["one query"], "1", lane="query")
    await triton.embed(["a document"], "1")
    assert client.models == ["embedder_v1_query", "embedder_v1"]  # each version a model of its own
    # The query model has one level (0: its default); the bulk model's bulk level.
    assert client.requests == [(1, 0), (1, BULK_PRIORITY)]
    assert query_model_name(version_model_name("embedder", 3)) == "embedder_v3_query"
    assert served_version("embedder", "embedder_v3_query") == served_version("embedder", "embedder_v3") == 3
    assert served_version("embedder", "embedder_v3x") is None
    assert served_version("other", "embedder_v3") is None


async def test_without_a_query_model_the_bulk_model_answers_queries_first() -> None:
    triton = TritonEmbedder("127.0.0.1:1", "embedder", max_batch_size=64, request_size=16, retries=3)
    client = _Client(missing=frozenset({"embedder_v1_query"}))
    triton._client = client  # type: ignore[assignment]
    result = await triton.embed(["one query"], "1", lane="query")
    assert result.vectors.shape == (1, 3)
    # Tried once (no retries against a model that is not there), then the bulk model, ahead of bulk.
    assert client.models == ["embedder_v1_query", "embedder_v1"]
    assert client.requests == [(1, QUERY_PRIORITY)]
    assert QUERY_PRIORITY < BULK_PRIORITY  # Triton serves level 1 before level 2


async def test_request_size_never_exceeds_the_max_batch() -> None:
    assert TritonEmbedder("127.0.0.1:1", "e", max_batch_size=8, request_size=32).request_size == 8
    assert TritonEmbedder("127.0.0.1:1", "e", max_batch_size=8).request_size == 8


async def test_search_embeds_its_query_in_the_query_lane() -> None:
    fake = FakeEmbedder()
    await search(SearchQuery("cats"), FakeStore(), fake)
    assert fake.lanes == ["query"]


def test_model_config_declares_the_lanes_instances_and_threads() -> None:
    config = model_config("embedder", 64, [16, 32, 64], instance_kind="KIND_CPU", instance_count=3,
                          intra_op_threads=2, bulk_nice=10)
    assert "priority_levels: 2" in config and f"default_priority_level: {BULK_PRIORITY}" in config
    assert "count: 3" in config and 'string_value: "2"' in config
    assert 'key: "lane"\n  value: { string_value: "bulk" }' in config
    assert 'key: "nice"\n  value: { string_value: "10" }' in config
    assert "preferred_batch_size: [ 16, 32, 64 ]" in config
    with pytest.raises(ValueError):
        model_config("embedder", 64, [64], instance_kind="KIND_CPU", instance_count=0)
    with pytest.raises(ValueError):
        model_config("embedder", 64, [64], instance_kind="KIND_CPU", bulk_nice=20)


def test_the_query_model_has_one_instance_of_its_own_at_full_priority() -> None:
    config = model_config("embedder", 64, [16, 32, 64], instance_kind="KIND_CPU", instance_count=3,
                          bulk_nice=10, lane="query")
    assert 'name: "embedder_query"' in config and "count: 1" in config
    assert 'key: "lane"\n  value: { string_value: "query" }' in config
    assert 'key: "nice"\n  value: { string_value: "0" }' in config
    assert "preferred_batch_size" not in config  # queries come alone: nothing to wait for
    assert "max_queue_delay_microseconds: 0" in config and "priority_levels" not in config
    assert 'key: "intra_op_threads"\n  value: { string_value: "1" }' in config
    with pytest.raises(ValueError):
        model_config("embedder", 64, [64], instance_kind="KIND_CPU", lane="express")


@pytest.mark.parametrize(("cores", "expected"), [(1, 1), (2, 1), (8, 2), (16, 4), (64, 4)])
def test_cpu_instances_follow_the_cores(cores: int, expected: int) -> None:
    assert default_instance_count("KIND_CPU", cores) == expected
    assert default_instance_count("KIND_GPU", cores) == 1


def test_instances_share_the_cores_without_oversubscribing(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util
    import sys
    import types

    # model.py runs inside Triton's stub; only its thread arithmetic is checked here.
    backend = types.ModuleType("triton_python_backend_utils")
    st = types.ModuleType("sentence_transformers")
    st.SentenceTransformer = object  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", backend)
    monkeypatch.setitem(sys.modules, "sentence_transformers", st)
    spec = importlib.util.spec_from_file_location("triton_model_under_test",
                                                  "core/adapters/triton_model/model.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))
    config: dict[str, Any] = {"instance_group": [{"count": 2, "kind": "KIND_CPU"}],
                              "parameters": {"intra_op_threads": {"string_value": "0"}}}
    assert module.intra_op_threads(config, "cpu") == 4
    config["parameters"]["intra_op_threads"]["string_value"] = "3"
    assert module.intra_op_threads(config, "cpu") == 3
