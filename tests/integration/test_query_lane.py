"""The query lane on the real Triton: a query is answered while a large bulk batch is queued."""

from __future__ import annotations

import asyncio

import pytest

from core.adapters.triton_embedder import TritonEmbedder
from core.serving import BASE_SERVING_VERSION
from infra.process import Component

pytestmark = pytest.mark.integration


async def test_a_query_overtakes_queued_bulk_work(triton: Component, embedder: TritonEmbedder) -> None:
    version = BASE_SERVING_VERSION
    await embedder.embed(["warm-up"], version)
    texts = [f"bulk document {i}: kafka topics feed the indexer, which embeds chunks" for i in range(512)]
    size = embedder.request_size
    finished: list[str] = []

    async def bulk(part: int) -> None:
        # What the indexer sends: requests of request_size texts, all in flight at once.
        await embedder.embed(texts[part * size : (part + 1) * size], version)
        finished.append(f"bulk-{part}")

    parts = [asyncio.create_task(bulk(part)) for part in range(len(texts) // size)]
    while not finished:  # Triton has answered the first bulk request: the rest are queued
        await asyncio.sleep(0.005)
    query = await embedder.embed(["how do I reset my password?"], version, lane="query")
    finished.append("query")
    await asyncio.gather(*parts)

    assert query.vectors.shape[0] == 1
    position = finished.index("query")
    # Without the lane the query would queue behind every bulk request and come last; with it,
    # it waits for the batch in execution (and the one being formed), then goes first.
    assert position < len(parts) // 2, finished
