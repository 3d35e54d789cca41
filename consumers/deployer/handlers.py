"""Rolling a published model version out to Triton, over ports (no Kafka, no MLflow here).

Steps, each recorded as the task's stage: download the registered model -> place it in the
model repository as its numeric version -> load it through Triton's model-control API (the
versions already serving keep serving) -> wait until the version is READY -> read the form it
chose to serve (fp32, bf16, fp16: measured by the model itself on Triton's machine, see
core/adapters/triton_model/forms.py) and record it on the task and in MLflow -> warm it up ->
smoke test (known texts embedded by Triton, in the form it serves, must match the registered
model run in-process in fp32 by deploy_min_cosine) -> request the reindex. A failure at any
step leaves the active version serving and the pgvector pointer untouched; only a version this
attempt placed, which never served, is removed. A cancelled deploy (core.task_control) stops
at its next stage, unloads the version it placed, and ends `cancelled`; a pending one is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.ports import Embedder, ModelServer, Tasks
from core.serving import serving_version
from core.task_control import TaskCancelled, cancel_requested, stop_if_cancelled
from schemas.model_published import ModelPublished
from schemas.reindex import ReindexRequested

log = logging.getLogger("flywheel.deployer")

# Texts of several kinds (short, long, non-ASCII) whose embeddings must agree.
SMOKE_TEXTS = [
    "How do I reset my password?",
    "Kafka keeps the content topic compacted, so a replay from offset 0 sees every item.",
    "pgvector stores embeddings next to the rows they describe.",
    "Grüße aus Köln — ünïcödé ✓",
    "a",
]
WARMUP_ROUNDS = 2
# Deterministic ids for the events a deploy publishes: a re-run publishes the same event.
_EVENT_NAMESPACE = uuid.UUID("6f1c2a4e-9a57-4c0e-8b1e-3d7f7f0a6b21")


class DeployFailed(RuntimeError):
    """The rollout of this version cannot succeed as published; the message says why."""


class NotRegistered(ValueError):
    """The event's version or artifact is not what the model registry holds: refused, and the
    event parked on the dead-letter topic with this reason (nothing is downloaded)."""


@dataclass
class DeployDeps:
    tasks: Tasks
    server: ModelServer
    embedder: Embedder
    # (artifact_uri, destination) -> the sentence-transformers directory; blocking.
    fetch: Callable[[str, Path], Path]
    # (model_dir, texts) -> normalised embeddings computed in-process; blocking.
    reference: Callable[[Path, list[str]], np.ndarray]
    publish: Callable[[ReindexRequested], Awaitable[None]]
    workdir: Path
    # (event, serving decision) -> logs the served form on the version's MLflow run; blocking,
    # best effort (a failure is logged, the rollout goes on).
    record_serving: Callable[[ModelPublished, dict[str, Any]], None] | None = None
    # event -> why the registry does not hold it as published (None: it does); blocking.
    verify: Callable[[ModelPublished], str | None] | None = None
    min_cosine: float = 0.999
    ready_timeout_s: float = 600.0


def task_id(model_version: str) -> str:
    return f"deploy-{model_version}"


def reindex_event(event: ModelPublished) -> ReindexRequested:
    return ReindexRequested(
        event_id=uuid.uuid5(_EVENT_NAMESPACE, f"reindex-{event.model_version}-{event.event_id}"),
        model_version=event.model_version,
        fusion_weight=event.fusion_weight,
        tenant=event.tenant,
        source="deployer",
    )


async def deploy(event: ModelPublished, deps: DeployDeps) -> dict[str, Any]:
    """Roll out `event.model_version`; returns the task. Idempotent: a succeeded deploy is kept.
    An event whose version and artifact the registry does not hold raises NotRegistered."""
    if deps.verify is not None:
        reason = await asyncio.to_thread(deps.verify, event)
        if reason is not None:
            raise NotRegistered(f"model-published refused: {reason}")
    tid = task_id(event.model_version)
    task, _ = await deps.tasks.create(tid, "deploy", event.tenant, details={
        "model_version": event.model_version, "registry_version": event.registry_version,
        "run_id": event.run_id, "artifact_uri": event.artifact_uri, "metrics": event.metrics,
    })
    if task["status"] in ("succeeded", "cancelled"):
        log.info("deploy of version %s already %s; nothing to do", event.model_version, task["status"])
        return task
    began = time.monotonic()
    stage = "validating"

    async def step(name: str, progress: float) -> None:
        nonlocal stage
        stage = name
        stop_if_cancelled(await deps.tasks.update(tid, status="running", stage=name, progress=progress,
                                                  error=None))

    placed_now = False
    version = 0
    download_dir = deps.workdir / f"v{event.model_version}-{uuid.uuid4().hex[:8]}"
    try:
        if cancel_requested(task):  # asked to stop before a crash
            raise TaskCancelled(f"deploy of version {event.model_version} was cancelled")
        await step(stage, 0.0)
        version = _check_versions(event)
        await step("downloading", 0.1)
        model_dir = await asyncio.to_thread(deps.fetch, event.artifact_uri, download_dir)

        await step("placing", 0.3)
        placed_now = await _place(deps.server, version, model_dir)

        await step("loading", 0.45)
        await deps.server.load()
        await _wait_ready(deps.server, str(version), deps.ready_timeout_s)
        serving = await _record_serving(deps, tid, event, version)

        await step("warming_up", 0.65)
        for _ in range(WARMUP_ROUNDS):
            await deps.embedder.embed(SMOKE_TEXTS, str(version))

        await step("smoke_testing", 0.8)
        cosine = await _smoke_test(deps, model_dir, str(version))

        await step("requesting_reindex", 0.9)
        await deps.publish(reindex_event(event))
    except TaskCancelled:
        log.info("deploy of version %s cancelled at %s", event.model_version, stage)
        if placed_now:
            await _withdraw(deps.server, version)
        cancelled = await deps.tasks.update(tid, status="cancelled", stage=stage, error="cancelled")
        return cancelled or task
    except Exception as error:
        reason = f"{stage}: {error}"
        log.error("deploy of version %s failed at %s", event.model_version, reason)
        if placed_now:
            await _withdraw(deps.server, version)
        failed = await deps.tasks.update(tid, status="failed", stage=stage, error=reason)
        return failed or task
    finally:
        await asyncio.to_thread(shutil.rmtree, download_dir, True)
    done = await deps.tasks.update(
        tid, status="succeeded", stage="done", progress=1.0, error=None,
        **{"details.min_cosine": cosine, "details.duration_s": round(time.monotonic() - began, 3)},
    )
    log.info("version %s serves in Triton as %s (smoke cosine %.5f); reindex requested", version,
             serving.get("form", "unknown") if serving else "unknown", cosine)
    return done or task


def mlflow_record(decision: dict[str, Any]) -> tuple[dict[str, str], dict[str, float]]:
    """The serving decision as MLflow tags (form, reason, device, setting, format (pytorch or
    onnx), weights' dtype: tags, since a later deploy of the version may choose again) and
    metrics (texts/s and quality of each form measured, the served form's size and each's)."""
    keys = ("form", "reason", "precision", "device", "format", "weights_dtype")
    tags = {f"serving.{key}": str(decision[key])[:5000] for key in keys if key in decision}
    metrics: dict[str, float] = {}
    for form, speed in (decision.get("texts_per_s") or {}).items():
        metrics[f"serving_{form}_texts_per_s"] = float(speed)
    for form, scores in (decision.get("quality") or {}).items():
        for name, value in scores.items():
            metrics[f"serving_{form}_{name}"] = float(value)
    if "size_bytes" in decision:
        metrics["serving_size_bytes"] = float(decision["size_bytes"])
    for form, size in (decision.get("size_bytes_by_form") or {}).items():
        metrics[f"serving_{form}_size_bytes"] = float(size)
    return tags, metrics


async def _record_serving(
    deps: DeployDeps, tid: str, event: ModelPublished, version: int,
) -> dict[str, Any] | None:
    """The form the loaded version chose (its serving.json), on the task and in MLflow."""
    serving = await asyncio.to_thread(deps.server.serving_decision, version)
    if serving is None:
        log.warning("version %s wrote no serving decision (an old model.py, or a read-only repository)",
                    version)
        return None
    await deps.tasks.update(tid, **{"details.serving": serving})
    log.info("version %s serves %s: %s", version, serving.get("form"), serving.get("reason"))
    if deps.record_serving is not None:
        try:
            await asyncio.to_thread(deps.record_serving, event, serving)
        except Exception as error:  # MLflow is the record, not the rollout
            log.warning("could not log version %s's serving form to MLflow: %r", version, error)
    return serving


def _check_versions(event: ModelPublished) -> int:
    if not event.model_version.isdigit() or int(event.model_version) < 2:
        raise DeployFailed(
            f"model_version must be a serving version >= 2 (1 is the base model), not {event.model_version!r}"
        )
    expected = serving_version(event.registry_version)
    if event.model_version != expected:
        raise DeployFailed(
            f"registry version {event.registry_version} is serving version {expected}, "
            f"not {event.model_version} (see core.serving)"
        )
    return int(event.model_version)


async def _place(server: ModelServer, version: int, model_dir: Path) -> bool:
    """Put the version into the repository; True when this call placed it.

    A version directory that is present but not READY never served (a crashed or failed
    earlier attempt): it is replaced by this artifact. A READY one is kept as it is.
    """
    if await asyncio.to_thread(server.has_version, version):
        if await server.is_ready(str(version)):
            return False
        await asyncio.to_thread(server.remove_version, version)
    await asyncio.to_thread(server.place_version, version, model_dir)
    return True


async def _wait_ready(server: ModelServer, version: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await server.is_ready(version):
        state, reason = (await server.version_states()).get(version, ("UNKNOWN", ""))
        if state == "UNAVAILABLE" and reason:
            raise DeployFailed(f"Triton could not load version {version}: {reason}")
        if time.monotonic() > deadline:
            raise DeployFailed(f"version {version} not ready after {timeout_s:.0f}s (state {state})")
        await asyncio.sleep(0.5)


async def _smoke_test(deps: DeployDeps, model_dir: Path, version: str) -> float:
    served = (await deps.embedder.embed(SMOKE_TEXTS, version)).vectors
    expected = await asyncio.to_thread(deps.reference, model_dir, list(SMOKE_TEXTS))
    if served.shape != expected.shape:
        raise DeployFailed(f"Triton returns vectors of shape {served.shape}; the model {expected.shape}")
    cosines = np.sum(_normalise(served) * _normalise(expected), axis=1)
    worst = float(np.min(cosines))
    if worst < deps.min_cosine:
        text = SMOKE_TEXTS[int(np.argmin(cosines))]
        raise DeployFailed(
            f"Triton's embedding of {text!r} differs from the registered model's: "
            f"cosine {worst:.5f} < {deps.min_cosine}"
        )
    return worst


def _normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.asarray(vectors / np.where(norms == 0, 1.0, norms), dtype=np.float32)


async def _withdraw(server: ModelServer, version: int) -> None:
    """Remove a version this attempt placed, so no later load trips over it, and reload so
    that Triton forgets it, loaded or failed (a failed version keeps the server unready);
    the other versions keep serving."""
    try:
        await asyncio.to_thread(server.remove_version, version)
        await server.load()
    except Exception as error:  # best effort: the task already records the failure
        log.warning("could not withdraw version %s from Triton: %s", version, error)
