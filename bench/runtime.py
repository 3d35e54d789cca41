"""What a benchmark needs from its surroundings: the stack's components (checked up front, so
a stack that is down is named instead of timing out), the in-process baseline model, and a
description of the machine the numbers come from."""

from __future__ import annotations

import asyncio
import os
import platform
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg

from core.adapters.pgvector import PgVectorStore
from core.adapters.triton_embedder import TritonEmbedder
from core.bootstrap import build_embedder, build_store
from core.config import Settings
from core.embeddings import served_model_dir
from core.serving import BASE_SERVING_VERSION
from producers.publisher import Publisher, PublisherError

CHECK_TIMEOUT_S = 5.0
_HINT = (
    ". Start the stack with `make up` (or point the FLYWHEEL_* settings at a running one); "
    "`flywheel status` shows what is down."
)


class StackUnavailable(RuntimeError):
    """A component the benchmark needs cannot be reached."""


@dataclass
class Stack:
    settings: Settings
    store: PgVectorStore
    embedder: TritonEmbedder
    exit_stack: AsyncExitStack
    publisher: Publisher | None = None

    async def ensure_publisher(self) -> Publisher:
        """Kafka and the indexer are needed only to ingest: checked and connected on first use."""
        if self.publisher is None:
            problems = [p for p in await asyncio.gather(
                _kafka_problem(self.settings), _indexer_problem(self.settings)) if p]
            if problems:
                raise StackUnavailable("cannot reach " + "; ".join(problems) + _HINT)
            publisher = Publisher(self.settings.bootstrap_servers, source="flywheel-bench", linger_ms=5)
            try:
                await asyncio.wait_for(publisher.start(), 30)
            except (PublisherError, TimeoutError) as error:
                raise StackUnavailable(
                    f"cannot reach Kafka at {self.settings.bootstrap_servers}: {error}") from error
            self.exit_stack.push_async_callback(publisher.stop)
            self.publisher = publisher
        return self.publisher


async def _postgres_problem(settings: Settings) -> str | None:
    try:
        conn = await psycopg.AsyncConnection.connect(
            settings.postgres_dsn, connect_timeout=int(CHECK_TIMEOUT_S)
        )
    except (psycopg.Error, OSError) as error:
        return f"PostgreSQL at {settings.postgres_dsn} ({_first_line(error)})"
    await conn.close()
    return None


async def _triton_problem(settings: Settings) -> str | None:
    url = f"http://{settings.triton_http_url}/v2/health/ready"
    try:
        async with httpx.AsyncClient(timeout=CHECK_TIMEOUT_S) as client:
            response = await client.get(url)
    except httpx.HTTPError as error:
        return f"Triton at {settings.triton_http_url} ({type(error).__name__})"
    if response.status_code != 200:
        return f"Triton at {settings.triton_http_url} (not ready: HTTP {response.status_code})"
    return None


async def _indexer_problem(settings: Settings) -> str | None:
    url = f"http://{settings.host}:{settings.services_base_port}/health"
    try:
        async with httpx.AsyncClient(timeout=CHECK_TIMEOUT_S + 1) as client:
            response = await client.get(url)
    except httpx.HTTPError as error:
        return f"the indexer service at {url} ({type(error).__name__})"
    if response.status_code >= 300:
        return f"the indexer service at {url} (unhealthy: HTTP {response.status_code})"
    return None


async def _kafka_problem(settings: Settings) -> str | None:
    host, _, port = settings.bootstrap_servers.split(",")[0].rpartition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), CHECK_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as error:
        return f"Kafka at {settings.bootstrap_servers} ({type(error).__name__})"
    writer.close()
    return None


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


async def check_stack(settings: Settings, *, ingest: bool) -> None:
    """Raise StackUnavailable naming every unreachable component the benchmark needs."""
    checks = [_postgres_problem(settings), _triton_problem(settings)]
    if ingest:
        checks += [_kafka_problem(settings), _indexer_problem(settings)]
    problems = [p for p in await asyncio.gather(*checks) if p]
    if problems:
        raise StackUnavailable("cannot reach " + "; ".join(problems) + _HINT)


@asynccontextmanager
async def open_stack(settings: Settings, *, ingest: bool) -> AsyncIterator[Stack]:
    await check_stack(settings, ingest=ingest)
    async with AsyncExitStack() as exit_stack:
        store = await build_store(settings)
        exit_stack.push_async_callback(store.close)
        embedder = build_embedder(settings)
        exit_stack.push_async_callback(embedder.close)
        stack = Stack(settings, store, embedder, exit_stack)
        if ingest:
            await stack.ensure_publisher()
        yield stack


async def run_bounded(calls: Sequence[Callable[[], Awaitable[None]]], concurrency: int) -> None:
    """Run every call, in order, with at most `concurrency` in flight; an error propagates."""
    pending = list(reversed(calls))

    async def worker() -> None:
        while pending:
            await pending.pop()()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


# --- the in-process baseline ------------------------------------------------------------------
@dataclass
class LocalModel:
    model: Any
    path: Path
    device: str
    threads: int

    def encode(self, texts: list[str], batch_size: int) -> Any:
        import torch

        with torch.inference_mode():
            return self.model.encode(
                texts, batch_size=batch_size, normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=False,
            )


def load_local_model(
    settings: Settings, version: str | None = BASE_SERVING_VERSION, threads: int | None = None
) -> LocalModel:
    """The baseline model, in this process; `threads` sets torch's intra-op threads (default:
    torch's own choice, one per core, as in Triton's Python backend)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    if threads:
        torch.set_num_threads(threads)
    path = served_model_dir(settings, version)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = SentenceTransformer(str(path), device=device, local_files_only=True)
    model.eval()
    return LocalModel(model, path, device, torch.get_num_threads())


# --- the machine --------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError):
        pass
    return None


def machine_info() -> dict[str, Any]:
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "cores": cores,
        "memory_gib": _memory_gib(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch_threads": torch.get_num_threads(),
        # Other work on the machine skews every figure; this says how busy it was.
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
    }

