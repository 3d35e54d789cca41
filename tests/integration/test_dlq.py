"""`flywheel dlq`: dead letters listed, shown, and redriven once to their topic."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from typer.testing import CliRunner

from cli.main import app
from core.adapters.pgvector import PgVectorStore
from core.config import Settings
from infra.process import Component
from producers.publisher import Publisher

pytestmark = pytest.mark.integration
runner = CliRunner()


async def cli(settings: Settings, *args: str) -> str:
    """The command as a user runs it (in a thread: it runs its own event loop)."""
    result = await asyncio.to_thread(runner.invoke, app, [*args, "--bootstrap", settings.bootstrap_servers])
    assert result.exit_code == 0, result.output
    return result.output


async def test_letters_are_listed_shown_and_redriven_once(
    indexer_service: Component, publisher: Publisher, store: PgVectorStore, test_settings: Settings
) -> None:
    tenant = f"dlq-{uuid.uuid4().hex[:8]}"
    producer = publisher._producer
    assert producer is not None
    # A valid event that failed for a reason since fixed, as a consumer would have parked it.
    value = json.dumps({"id": "parked", "text": "A letter that deserves a second chance.",
                        "version": 1, "tenant": tenant}).encode()
    parked = await producer.send_and_wait(
        "content-upserted.dlq", value, key=f"{tenant}/parked".encode(),
        headers=[("dlq-error", b"Triton was down"), ("dlq-original-topic", b"content-upserted"),
                 ("dlq-original-partition", b"0"), ("dlq-original-offset", b"7")])

    listed = json.loads(await cli(test_settings, "dlq", "list", "--topic", "content-upserted", "--json",
                            "--limit", "200"))
    assert listed[0]["topic"] == "content-upserted.dlq" and listed[0]["pending"] >= 1, listed
    assert any(x["key"] == f"{tenant}/parked" and x["error"] == "Triton was down"
               for x in listed[0]["letters"])
    shown = json.loads(await cli(test_settings, "dlq", "show", "content-upserted",
                           f"{parked.partition}@{parked.offset}", "--json"))
    assert shown["headers"]["dlq-original-offset"] == "7" and "second chance" in shown["value"]

    # Other tests' letters may be pending too: they are redriven with ours.
    assert f"key={tenant}/parked" in await cli(test_settings, "dlq", "redrive", "content-upserted")
    deadline = time.monotonic() + 60
    while await store.count_items(tenant) != 1:
        assert time.monotonic() < deadline, "redriven letter was not indexed"
        await asyncio.sleep(0.3)
    # Redriven once: a second redrive does not send it again.
    assert f"key={tenant}/parked" not in await cli(test_settings, "dlq", "redrive", "content-upserted")
