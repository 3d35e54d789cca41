"""The embedder on NVIDIA Triton (gRPC, asyncio).

Texts go out in requests of `request_size` texts (smaller than the model's max batch), all in
flight at once, so Triton's dynamic batcher merges them into full batches; a briefly
unavailable server is retried with bounded exponential backoff. Each version is a Triton model
of its own (core.serving.version_model_name). The query lane sends its requests to the
version's query model (core.serving.query_model_name: an instance of its own, so a query never
waits for a bulk batch in execution); where that model cannot answer, the bulk model answers
the query at the higher priority, ahead of its queued bulk requests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import numpy as np
import tritonclient.grpc.aio as grpcclient
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from tritonclient.utils import InferenceServerException

from core.domain import Embeddings
from core.metrics import EMBED_SECONDS, EMBEDDED_TEXTS
from core.ports import Lane
from core.serving import BULK_PRIORITY, QUERY_PRIORITY, query_model_name, version_model_name
from core.serving import TRITON_INPUT as INPUT_NAME
from core.serving import TRITON_OUTPUT as OUTPUT_NAME

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("flywheel.embedder")

# gRPC status codes worth retrying: the server restarting, overloaded, or the model loading.
_TRANSIENT = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "not ready", "unavailable")


class EmbedderUnavailable(RuntimeError):
    """Triton did not answer within the retry budget: a transient failure, retry later."""


class TritonEmbedder:
    def __init__(
        self,
        url: str,
        model_name: str,
        max_batch_size: int = 64,
        retries: int = 5,
        backoff_s: float = 0.2,
        timeout_s: float = 60.0,
        request_size: int | None = None,
        query_deadline_s: float = 10.0,
        probe_timeout_s: float = 5.0,
    ) -> None:
        self.url = url
        self.model_name = model_name
        self.max_batch_size = max_batch_size
        self.request_size = max(1, min(request_size or max_batch_size, max_batch_size))
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        # A query (search, /v1/embeddings) waits this long in all, retries included; then it
        # fails with EmbedderUnavailable, which the gateway answers with 503 and the reason.
        self.query_deadline_s = query_deadline_s
        self.probe_timeout_s = probe_timeout_s
        self._client = grpcclient.InferenceServerClient(url)
        self._lane_fallbacks: set[str] = set()  # versions whose queries went to the bulk model

    async def close(self) -> None:
        await self._client.close()

    async def embed(self, texts: Sequence[str], model_version: str, *, lane: Lane = "bulk") -> Embeddings:
        if not texts:
            return Embeddings(np.zeros((0, 0), dtype=np.float32), self.model_name, model_version)
        size = self.request_size
        batches = [texts[i : i + size] for i in range(0, len(texts), size)]
        with EMBED_SECONDS.labels(model_version).time(), _tracer.start_as_current_span(
            "triton infer", kind=SpanKind.CLIENT,
            attributes={"model": self.model_name, "model_version": model_version, "texts": len(texts),
                        "lane": lane},
        ):
            if lane == "query":
                calls = asyncio.gather(*(self._query(batch, model_version) for batch in batches))
                try:
                    parts = await asyncio.wait_for(calls, timeout=self.query_deadline_s)
                except TimeoutError as error:
                    raise EmbedderUnavailable(
                        f"Triton at {self.url} did not answer a query within {self.query_deadline_s:g} s "
                        f"(FLYWHEEL_TRITON_QUERY_DEADLINE_S)") from error
            else:
                bulk = version_model_name(self.model_name, model_version)
                parts = await asyncio.gather(*(
                    self._infer(batch, bulk, model_version, BULK_PRIORITY) for batch in batches))
        EMBEDDED_TEXTS.labels(model_version).inc(len(texts))
        return Embeddings(np.concatenate(parts), self.model_name, model_version)

    async def _query(self, texts: Sequence[str], model_version: str) -> np.ndarray:
        """The query model once, without retries; if it cannot answer, the bulk model (with
        retries) at the query priority."""
        bulk = version_model_name(self.model_name, model_version)
        try:
            # The query model has one priority level: 0 asks for its default.
            return await self._infer(texts, query_model_name(bulk), model_version, 0, retries=0)
        except (InferenceServerException, EmbedderUnavailable) as error:
            if model_version not in self._lane_fallbacks:
                self._lane_fallbacks.add(model_version)
                log.warning("query model %s cannot serve version %s (%s): queries go to %s",
                            query_model_name(bulk), model_version, error, bulk)
        return await self._infer(texts, bulk, model_version, QUERY_PRIORITY)

    async def _infer(
        self, texts: Sequence[str], model_name: str, model_version: str, priority: int,
        retries: int | None = None,
    ) -> np.ndarray:
        data = np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_)
        request = grpcclient.InferInput(INPUT_NAME, list(data.shape), "BYTES")
        request.set_data_from_numpy(data)
        output = grpcclient.InferRequestedOutput(OUTPUT_NAME)
        delay = self.backoff_s
        budget = self.retries if retries is None else retries
        for attempt in range(budget + 1):
            try:
                result = await self._client.infer(
                    model_name, [request], model_version=model_version,
                    outputs=[output], client_timeout=self.timeout_s, priority=priority,
                )
                vectors = result.as_numpy(OUTPUT_NAME)
                assert vectors is not None
                return np.asarray(vectors, dtype=np.float32)
            except InferenceServerException as error:
                if not _is_transient(error) or attempt == budget:
                    if _is_transient(error):
                        raise EmbedderUnavailable(f"Triton at {self.url}: {error}") from error
                    raise
                log.warning("Triton unavailable (%s); retry %d in %.1fs", error, attempt + 1, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    async def ready(self, model_version: str) -> bool:
        try:
            return bool(await self._client.is_model_ready(
                version_model_name(self.model_name, model_version), model_version,
                client_timeout=self.probe_timeout_s))
        except InferenceServerException:  # a timed-out probe included: not ready
            return False


def _is_transient(error: InferenceServerException) -> bool:
    text = f"{error.status()} {error.message()}"
    return any(marker in text for marker in _TRANSIENT)


async def wait_until_ready(embedder: TritonEmbedder, version: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not await embedder.ready(version):
        if time.monotonic() > deadline:
            raise EmbedderUnavailable(f"model {embedder.model_name} v{version} not ready after {timeout_s}s")
        await asyncio.sleep(0.5)
