"""The query lane on the real Triton: a query is answered while a large bulk batch is queued."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from core.adapters.pgvector import PgVectorStore
from core.adapters.triton_embedder import TritonEmbedder
from core.base_model import default_base_model_dir
from core.bootstrap import build_model_control, ensure_initial_version
from core.config import Settings
from core.domain import SearchQuery
from core.search import search
from core.serving import BASE_SERVING_VERSION, query_model_name, version_model_name
from infra.process import Component

pytestmark = pytest.mark.integration


async def finished_order(
    embedder: TritonEmbedder, version: str, query: Callable[[], Awaitable[Any]],
) -> tuple[int, int]:
    """Queue 512 texts of bulk work for `version` as the indexer sends them (requests of
    request_size texts, all in flight at once), run `query` once Triton has answered the first
    bulk request (the rest are queued), and return where it finished among the bulk requests."""
    await embedder.embed(["warm-up"], version)
    texts = [f"bulk document {i}: kafka topics feed the indexer, which embeds chunks" for i in range(512)]
    size = embedder.request_size
    finished: list[str] = []

    async def bulk(part: int) -> None:
        await embedder.embed(texts[part * size : (part + 1) * size], version)
        finished.append(f"bulk-{part}")

    parts = [asyncio.create_task(bulk(part)) for part in range(len(texts) // size)]
    while not finished:
        await asyncio.sleep(0.005)
    await query()
    finished.append("query")
    await asyncio.gather(*parts)
    return finished.index("query"), len(parts)


async def successes(embedder: TritonEmbedder, model: str) -> int:
    """Requests `model` (every version) has answered, from Triton's statistics."""
    stats = await embedder._client.get_inference_statistics(model_name=model, as_json=True)
    return sum(int(m.get("inference_stats", {}).get("success", {}).get("count", 0))
               for m in stats.get("model_stats", []))


def stub_niceness(repository: Path) -> dict[str, int]:
    """The niceness of each Python-backend stub serving from `repository`, by model directory."""
    found: dict[str, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        if not args or not args[0].endswith(b"triton_python_backend_stub"):
            continue
        model_py = Path(args[1].decode())
        if model_py.is_relative_to(repository):
            # stat: "pid (comm) state ppid ..."; nice is field 19 (1-based)
            found[model_py.relative_to(repository).parts[0]] = int(stat.rsplit(")", 1)[1].split()[16])
    return found


async def test_a_query_overtakes_queued_bulk_work(
    triton: Component, embedder: TritonEmbedder, test_settings: Settings,
) -> None:
    async def query() -> None:
        embedded = await embedder.embed(["how do I reset my password?"], BASE_SERVING_VERSION, lane="query")
        assert embedded.vectors.shape[0] == 1

    bulk_model = version_model_name(embedder.model_name, BASE_SERVING_VERSION)
    query_model = query_model_name(bulk_model)
    answered = await successes(embedder, query_model)
    position, bulk_requests = await finished_order(embedder, BASE_SERVING_VERSION, query)
    # Without the lane the query would queue behind every bulk request and come last; with it,
    # the query model's own instance answers it while the bulk instance works through its queue.
    assert position < bulk_requests // 2, (position, bulk_requests)
    assert await successes(embedder, query_model) == answered + 1  # the query model answered
    # On a CPU the bulk instance runs at the configured lower priority, the query's instance at 0.
    niceness = stub_niceness(test_settings.triton_repository)
    assert niceness.get(bulk_model) == test_settings.triton_bulk_nice, niceness
    assert niceness.get(query_model) == 0, niceness


async def test_a_search_is_answered_while_indexing_is_queued(
    triton: Component, embedder: TritonEmbedder, store: PgVectorStore,
) -> None:
    await ensure_initial_version(store, embedder)
    active = await store.active_version("lane-test")
    assert active is not None

    async def query() -> None:
        result = await search(SearchQuery("how do I reset my password?", tenant="lane-test"),
                              store.for_tenant("lane-test"), embedder)
        assert result.model_version == active  # the same model version as the queued bulk work

    position, bulk_requests = await finished_order(embedder, active, query)
    assert position < bulk_requests // 2, (position, bulk_requests)


def loaded_since(triton: Component, offset: int) -> list[str]:
    """The models Triton started loading since byte `offset` of its log ("loading: <model>:<v>")."""
    with triton.log_file.open("rb") as log:
        log.seek(offset)
        lines = log.read().decode(errors="replace").splitlines()
    return [line.split('"loading: ', 1)[1].rstrip('"') for line in lines if '"loading: ' in line]


async def test_a_load_loads_only_the_version_placed_and_a_removal_unloads_only_it(
    triton: Component, embedder: TritonEmbedder, test_settings: Settings,
) -> None:
    """Each version is a Triton model of its own in each lane, and what a version's first load
    writes (its serving decisions, its ONNX files) stays out of its model's directory: placing
    a version loads that version alone, loading again reloads nothing, and removing it unloads
    it alone. (Triton reloads every version of a model whose directory changed in any way.)"""
    control = build_model_control(test_settings)
    version = 9_001
    bulk = version_model_name(test_settings.triton_model_name, version)
    await asyncio.to_thread(control.place_version, version, default_base_model_dir())
    try:
        logged = triton.log_file.stat().st_size
        await control.load()  # loads the new version: it measures, decides and builds
        assert sorted(loaded_since(triton, logged)) == [f"{bulk}:{version}", f"{bulk}_query:{version}"]
        decision = control.serving_decision(version)
        assert decision is not None and "query_lane" in decision, decision
        version_dir = test_settings.triton_repository / bulk / str(version)
        files = sorted(path.relative_to(version_dir) for path in version_dir.rglob("*"))
        logged = triton.log_file.stat().st_size
        await control.load()
        assert loaded_since(triton, logged) == []
        assert sorted(path.relative_to(version_dir) for path in version_dir.rglob("*")) == files
        assert not any(path.parts[0] in ("onnx", "__pycache__") or (path.suffix == ".json"
                       and path.name.startswith("serving")) for path in files), files
        served = await embedder.embed(["still served"], str(version), lane="query")
        assert served.vectors.shape[0] == 1
    finally:
        await asyncio.to_thread(control.remove_version, version)
    logged = triton.log_file.stat().st_size
    await control.load()
    assert loaded_since(triton, logged) == []
    assert not await control.is_ready(str(version))
    assert (await control.version_states())[BASE_SERVING_VERSION][0] == "READY"  # untouched
    await control.close()
