"""`flywheel bench quality`: does search get better from its users? One run through the
gateway, on a BEIR dataset with train and test judgements:

1. the corpus is published through the gateway (to Kafka) and indexed by the indexer;
2. the test queries are searched as users send them, in vector and hybrid mode: nDCG@10 from
   k=10 requests, Recall@100 from k=100 requests;
3. the training data arrives as the `--source` says: `sessions` (default): each train query is
   searched in a session and a relevant result among those shown is clicked, as a user would,
   and the sessions service folds the clicks into sessions; `judgments`: the train judgements
   are uploaded as a dataset (`POST /v1/datasets`), with every seventh train query uploaded
   apart as the held-out set the gate judges on; `both`: the two together, the gate on the
   held-out upload;
4. a training run is requested from those sources; the trainer fine-tunes, gates and registers a version, the
   deployer rolls it out to Triton, the reindexer re-embeds the corpus and switches;
5. the test queries are searched again, now answered by the new version.

Every step goes through the REST API (or the events it publishes) of a running stack; the
numbers are what a user of the API would see.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
from rich.progress import Progress

from bench.beir import (
    BeirDataset,
    Qrels,
    clicks_for,
    judged_metrics,
    judgments_jsonl,
    ndcg,
    paired_change,
    split_held_out,
)
from bench.runtime import StackUnavailable, machine_info, run_bounded
from core.rollout import reindex_task_id
from schemas.topics import CLICKS
from schemas.training import Recipe

FINAL = ("succeeded", "failed", "rejected", "cancelled")
PUBLISH_BATCH = 200
SEARCH_MODES = ("vector", "hybrid")
Source = Literal["sessions", "judgments", "both"]


class QualityError(RuntimeError):
    """The run cannot go on: a step failed or timed out (the message says which)."""


@dataclass(frozen=True)
class QualityConfig:
    shown_k: int = 10  # results shown per training search; a relevant one among them is clicked
    epochs: int | None = None  # the recipe's default
    gate_margin: float = 0.0
    concurrency: int = 4
    timeout_s: float = 7200.0  # for each wait (indexing, training, rollout)
    poll_s: float = 1.0
    source: Source = "sessions"
    held_out_fraction: float = 1 / 7  # of the train judgements, uploaded apart for the gate
    recipe: Recipe | None = None  # the trainer's default

    @property
    def uses_sessions(self) -> bool:
        return self.source != "judgments"

    @property
    def uses_judgments(self) -> bool:
        return self.source != "sessions"


@dataclass
class Timings:
    began: float = field(default_factory=time.monotonic)
    phases: dict[str, float] = field(default_factory=dict)

    def phase(self, name: str, since: float) -> None:
        self.phases[name] = round(time.monotonic() - since, 2)

    def to_dict(self) -> dict[str, float]:
        return {**self.phases, "total": round(time.monotonic() - self.began, 2)}


class Api:
    """The gateway, as a client sees it: waits out 429 and 503 (Retry-After), raises on others."""

    def __init__(self, client: httpx.AsyncClient, attempts: int = 30) -> None:
        self.client = client
        self.attempts = attempts

    async def call(self, method: str, url: str, ok: Sequence[int] = (200,), **kwargs: Any) -> httpx.Response:
        for _ in range(self.attempts):
            try:
                response = await self.client.request(method, url, **kwargs)
            except httpx.TransportError as error:
                raise StackUnavailable(
                    f"cannot reach the gateway at {self.client.base_url}: {error!r}") from error
            if response.status_code in ok:
                return response
            if response.status_code in (429, 503):
                await asyncio.sleep(min(10.0, float(response.headers.get("Retry-After", "1"))))
                continue
            detail = response.text[:300]
            raise QualityError(f"{method} {url} answered {response.status_code}: {detail}")
        raise QualityError(f"{method} {url}: still 429/503 after {self.attempts} attempts")

    async def json(self, method: str, url: str, **kwargs: Any) -> Any:
        return (await self.call(method, url, **kwargs)).json()


async def _wait(what: str, check: Callable[[], Awaitable[bool]], timeout_s: float, poll_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise QualityError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(poll_s)


class QualityRun:
    def __init__(self, api: Api, data: BeirDataset, tenant: str, config: QualityConfig,
                 progress: Progress) -> None:
        self.api = api
        self.data = data
        self.tenant = tenant
        self.config = config
        self.progress = progress
        self.timings = Timings()
        self.run = uuid.uuid4().hex[:8]

    # --- corpus ---------------------------------------------------------------------------
    async def tenant_items(self) -> int:
        for row in await self.api.json("GET", "/v1/admin/tenants"):
            if row["tenant"] == self.tenant:
                return int(row["items"])
        return 0

    async def load(self) -> dict[str, Any]:
        began = time.monotonic()
        docs = self.data.docs
        bar = self.progress.add_task("publish corpus (gateway -> Kafka)", total=len(docs))
        batches = [docs[i:i + PUBLISH_BATCH] for i in range(0, len(docs), PUBLISH_BATCH)]

        def send(batch: Sequence[Any]) -> Callable[[], Awaitable[None]]:
            async def call() -> None:
                items = [{"id": d.id, "title": d.title, "text": d.text, "metadata": d.metadata, "version": 1}
                         for d in batch]
                await self.api.call("POST", "/v1/content", ok=(202,), json={"items": items})
                self.progress.advance(bar, len(batch))
            return call

        await run_bounded([send(b) for b in batches], 2)
        self.timings.phase("publish", began)

        began = time.monotonic()
        bar = self.progress.add_task("index (indexer -> pgvector)", total=len(docs))
        latest = 0

        async def indexed() -> bool:
            nonlocal latest
            latest = await self.tenant_items()
            self.progress.update(bar, completed=min(latest, len(docs)))
            return latest >= len(docs)

        await _wait(f"{len(docs)} items of tenant {self.tenant} to be indexed (last count {latest})",
                    indexed, self.config.timeout_s, self.config.poll_s)
        self.timings.phase("index", began)
        return {"items_in_tenant": latest}

    # --- evaluation through the search API ---------------------------------------------------
    async def evaluate(self, label: str, qrels: Qrels) -> dict[str, Any]:
        """Each test query as users send it: nDCG@10 from a k=10 request and Recall@100 from a
        k=100 request, in vector and in hybrid mode."""
        began = time.monotonic()
        rankings: dict[tuple[str, int], dict[str, list[str]]] = {
            (mode, k): {} for mode in SEARCH_MODES for k in (10, 100)}
        versions: Counter[str] = Counter()
        weights: Counter[float | None] = Counter()
        bar = self.progress.add_task(f"evaluate {label} (vector and hybrid, k=10 and k=100)",
                                     total=len(qrels) * len(rankings))

        def ask(qid: str, mode: str, k: int) -> Callable[[], Awaitable[None]]:
            async def call() -> None:
                body = await self.api.json("POST", "/v1/search", json={
                    "query": self.data.queries[qid], "k": k, "mode": mode})
                rankings[mode, k][qid] = [hit["id"] for hit in body["results"]]
                versions[body["model_version"]] += 1
                if mode == "hybrid":
                    weights[body.get("fusion_weight")] += 1
                self.progress.advance(bar)
            return call

        await run_bounded([ask(q, mode, k) for q in qrels for (mode, k) in rankings],
                          self.config.concurrency)
        self.timings.phase(f"evaluate_{label}", began)
        report: dict[str, Any] = {}
        for mode in SEARCH_MODES:
            at_10 = judged_metrics(rankings[mode, 10], qrels)
            at_100 = judged_metrics(rankings[mode, 100], qrels)
            report[mode] = {"ndcg@10": at_10["ndcg@10"], "recall@100": at_100["recall@100"],
                            "ndcg@10_at_k100": at_100["ndcg@10"],
                            "ndcg@10_by_query": {q: round(ndcg(rankings[mode, 10].get(q, []), judged, 10), 5)
                                                 for q, judged in qrels.items()}}
        # The vector weight the hybrid answers were fused at (the answering version's).
        report["hybrid"]["fusion_weight"] = weights.most_common(1)[0][0] if weights else None
        return {**report["vector"], "modes": report, "queries": len(qrels),
                "model_version": versions.most_common(1)[0][0], "answered_by": dict(versions)}

    # --- sessions from the train judgements ---------------------------------------------------
    async def sessions(self) -> dict[str, Any]:
        began = time.monotonic()
        counts: Counter[str] = Counter()
        bar = self.progress.add_task(f"sessions (search k={self.config.shown_k} + click)",
                                     total=len(self.data.train))

        def session(qid: str) -> Callable[[], Awaitable[None]]:
            async def call() -> None:
                session_id = f"quality-{self.run}-{qid}"
                body = await self.api.json("POST", "/v1/search", json={
                    "query": self.data.queries[qid], "k": self.config.shown_k, "session_id": session_id})
                clicks = clicks_for([hit["id"] for hit in body["results"]], self.data.train[qid])
                counts["searches"] += 1
                if clicks:
                    await self.api.call("POST", "/v1/clicks", ok=(202,), json={"events": [
                        {"type": "click", "session_id": session_id, "content_id": item, "rank": rank}
                        for item, rank in clicks]})
                    counts["sessions_with_clicks"] += 1
                    counts["clicks"] += len(clicks)
                self.progress.advance(bar)
            return call

        await run_bounded([session(q) for q in self.data.train], self.config.concurrency)
        self.timings.phase("sessions", began)

        began = time.monotonic()

        async def folded() -> bool:
            for topic in await self.api.json("GET", "/v1/admin/topics"):
                if topic["topic"] == CLICKS.name:
                    return any(g["group"] == "sessions" and g["lag"] == 0 for g in topic["groups"])
            return False

        await _wait("the sessions service to fold the clicks (its lag on the clicks topic to reach 0)",
                    folded, self.config.timeout_s, self.config.poll_s)
        self.timings.phase("sessions_folded", began)
        return dict(counts)

    # --- judgments uploaded as datasets ------------------------------------------------------
    async def upload_judgments(self) -> dict[str, Any]:
        """The train judgements as two datasets of this run: one to learn from, one held out."""
        began = time.monotonic()
        kept, held_out = split_held_out(self.data.train, self.config.held_out_fraction)
        uploaded: dict[str, Any] = {}
        for role, qrels in (("train", kept), ("eval", held_out)):
            name = f"quality-{self.run}-{role}"
            answer = await self.api.json("POST", "/v1/datasets", ok=(201,), json={
                "name": name, "format": "jsonl", "judgments": judgments_jsonl(qrels, self.data.queries)})
            if answer["stats"]["rejected"]:
                raise QualityError(f"dataset {name}: {answer['stats']['rejected']} judgments rejected: "
                                   f"{answer.get('rejects', [])[:3]}")
            uploaded[role] = {"name": name, **answer["stats"]}
        self.timings.phase("upload_judgments", began)
        return uploaded

    # --- training and rollout ------------------------------------------------------------------
    async def task(self, task_id: str) -> dict[str, Any] | None:
        response = await self.api.call("GET", f"/v1/tasks/{task_id}", ok=(200, 404))
        return response.json() if response.status_code == 200 else None

    async def follow(self, task_id: str, label: str) -> dict[str, Any]:
        """Poll a task until it is final, its progress on a bar."""
        bar = self.progress.add_task(label, total=100)
        found: dict[str, Any] = {}

        async def final() -> bool:
            task = await self.task(task_id)
            if task is None:
                return False
            found.update(task)
            stage = task.get("stage") or task["status"]
            self.progress.update(bar, completed=round(100 * (task.get("progress") or 0)),
                                 description=f"{label}: {stage}"[:34])
            return task["status"] in FINAL

        await _wait(f"task {task_id}", final, self.config.timeout_s, self.config.poll_s * 2)
        return found

    async def train(self, since: datetime, sessions_with_clicks: int,
                    uploaded: dict[str, Any] | None) -> dict[str, Any]:
        began = time.monotonic()
        request: dict[str, Any] = {
            "since": since.isoformat(), "min_sessions": max(1, sessions_with_clicks),
            "gate_margin": self.config.gate_margin, "use_sessions": self.config.uses_sessions}
        request |= {k: v for k, v in (("recipe", self.config.recipe), ("epochs", self.config.epochs)) if v}
        if uploaded:
            request |= {"datasets": [uploaded["train"]["name"]], "eval_dataset": uploaded["eval"]["name"]}
        accepted = await self.api.json("POST", "/v1/training-runs", ok=(202,), json=request)
        task = await self.follow(accepted["task_id"], "training")
        self.timings.phase("training", began)
        return task

    async def roll_out(self, version: str) -> None:
        # The deploy is shared; the reindex is this tenant's (its items, its lineage).
        tasks = (("deploy", f"deploy-{version}"), ("reindex", reindex_task_id(version, self.tenant)))
        for kind, task_id in tasks:
            began = time.monotonic()
            task = await self.follow(task_id, kind)
            if task["status"] != "succeeded":
                raise QualityError(f"{kind} of version {version} {task['status']}: {task.get('error')}")
            self.timings.phase(kind, began)

        async def active() -> bool:
            return (await self.api.json("GET", "/v1/models"))["active_version"] == version

        await _wait(f"version {version} to be active", active, self.config.timeout_s, self.config.poll_s)


def _training_summary(task: dict[str, Any]) -> dict[str, Any]:
    details = task.get("details") or {}
    return {"task_id": task["id"], "status": task["status"], "error": task.get("error"),
            "mlflow_run": (task.get("links") or {}).get("mlflow_run"),
            "recipe": details.get("recipe"), "epochs": details.get("epochs"),
            "dataset": details.get("dataset"), "training": details.get("training"),
            "held_out": details.get("metrics")}


async def _probe(api: Api, gateway_url: str, attempts: int = 10) -> None:
    """The key works (a key just created reaches the gateway within about a second)."""
    for attempt in range(attempts):
        response = await api.call("GET", "/v1/models", ok=(200, 401, 403))
        if response.status_code == 200:
            return
        if attempt < attempts - 1:
            await asyncio.sleep(0.5)
    raise StackUnavailable(f"the gateway at {gateway_url} refused the API key "
                           f"({response.status_code}: {response.text[:200]})")


async def run_quality(
    gateway_url: str, api_key: str, tenant: str, data: BeirDataset, config: QualityConfig,
    progress: Progress,
) -> dict[str, Any]:
    """One benchmark run; the report has `fine_tuned: null` when the gate rejected the candidate
    (the `training` entry says why)."""
    headers = {"Authorization": f"Bearer {api_key}"}
    async with httpx.AsyncClient(base_url=gateway_url, headers=headers, timeout=120) as client:
        api = Api(client)
        await _probe(api, gateway_url)
        run = QualityRun(api, data, tenant, config, progress)
        report: dict[str, Any] = {
            "dataset": {"name": data.name, **data.summary()}, "tenant": tenant,
            "settings": {"source": config.source, "shown_k": config.shown_k, "recipe": config.recipe,
                         "epochs": config.epochs, "gate_margin": config.gate_margin},
        }
        with progress:
            report["corpus"] = await run.load()
            report["base"] = await run.evaluate("base", data.test)
            since = datetime.now(UTC) - timedelta(seconds=1)
            report["sessions"] = await run.sessions() if config.uses_sessions else {}
            report["judgments"] = await run.upload_judgments() if config.uses_judgments else None
            task = await run.train(since, report["sessions"].get("sessions_with_clicks", 0),
                                   report["judgments"])
            report["training"] = _training_summary(task)
            version = (task.get("details") or {}).get("model_version") \
                if task["status"] == "succeeded" else None
            report["model_version"] = version
            report["fine_tuned"] = None
            if version:
                await run.roll_out(str(version))
                report["fine_tuned"] = await run.evaluate("fine-tuned", data.test)
        report["timings_s"] = run.timings.to_dict()
        report["machine"] = machine_info()
    if report["fine_tuned"]:
        report.update(changes(report["base"], report["fine_tuned"]))
    return report


def changes(base: dict[str, Any], fine_tuned: dict[str, Any]) -> dict[str, Any]:
    """`change` (vector mode) and `change_by_mode`: fine-tuned less base, with nDCG@10's paired
    standard error over the test queries (a change within about two of them is noise)."""
    by_mode: dict[str, Any] = {}
    for mode in SEARCH_MODES:
        before, after = base["modes"][mode], fine_tuned["modes"][mode]
        by_mode[mode] = {name: round(after[name] - before[name], 5) for name in ("ndcg@10", "recall@100")}
        by_mode[mode]["ndcg@10_standard_error"] = paired_change(
            before["ndcg@10_by_query"], after["ndcg@10_by_query"])["standard_error"]
    return {"change": {name: round(fine_tuned[name] - base[name], 5) for name in ("ndcg@10", "recall@100")},
            "change_by_mode": by_mode}
