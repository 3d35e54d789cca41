"""The admin web console in Debian's headless Chromium, driven by playwright-core (npm), against
the real stack: sign in with a key, search, request training and watch it pass the gate, be
deployed and reindexed until search answers with the new version; roll back to the version
before it and search with that; inspect a dead letter and redrive it; look at every page at
1280x800 and 390x844.

Needs `node`/`npm` and `/usr/bin/chromium` (`make system-deps` installs Chromium when root);
skipped with the reason when they are missing. Screenshots land in the test's tmp path and
are copied to <test state dir>/screenshots.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from core.api_keys import hash_key
from core.config import REPO_ROOT, Settings
from core.kafka_auth import kafka_client_options
from infra.process import Component
from infra.services import gateway_service
from tests.conftest import _run, _service
from tests.integration.flywheel_data import CODEWORDS, ITEMS
from tests.integration.kafka_helpers import end_offsets, read_from
from tests.integration.test_rollout import skip_history

pytestmark = pytest.mark.e2e

DRIVER_DIR = REPO_ROOT / "tests" / "console"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
ADMIN_KEY = f"key-console-{uuid.uuid4().hex}"
TENANT = "console"
ANIMALS = {"cat", "whale"}
# Sessions whose made-up query words are always answered by one item: the base model cannot
# know them, so a fine-tuned one beats it on the held-out sessions and passes the gate.
SESSIONS = 24
MALFORMED_CLICK = b'{"type": "click", "session_id": "console-bad"'  # cut off: not JSON


@pytest.fixture(scope="module")
def driver() -> Path:
    """playwright-core installed from the lock file (no browser download: Debian's Chromium)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed: apt-get install nodejs npm")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: `make system-deps` as root, or apt-get install chromium")
    if not (DRIVER_DIR / "node_modules" / "playwright-core" / "package.json").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=DRIVER_DIR, check=True, timeout=300,
                       env={**os.environ, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"})
    return DRIVER_DIR / "run.mjs"


@pytest.fixture(scope="module")
def rollout_services(
    test_settings: Settings, kafka: Component, postgres: Component, mongodb: Component, triton: Component,
    mlflow_server: Component,
) -> Iterator[None]:
    """The deployer and the reindexer, from now on: earlier tests' rollout events are theirs."""
    skip_history(test_settings, "model-published", "deployer")
    skip_history(test_settings, "reindex-requested", "reindexer")
    for _ in _run(_service(test_settings, "deployer")):
        for _ in _run(_service(test_settings, "reindexer")):
            yield


@pytest.fixture(scope="module")
def console_gateway(
    test_settings: Settings, kafka: Component, postgres: Component, mongodb: Component, triton: Component,
    indexer_service: Component, sessions_service: Component, trainer_service: Component,
) -> Iterator[str]:
    # An operator: the console's status and lag pages span tenants, and the malformed click it
    # inspects in clicks.dlq has no tenant to tell.
    records = [{"key_id": "console-admin", "key_sha256": hash_key(ADMIN_KEY), "tenant": TENANT,
                "scopes": ["publish", "search", "admin", "operator"]}]
    settings = test_settings.model_copy(update={"api_keys_json": json.dumps(records)})
    for _ in _run(gateway_service(settings)):
        yield settings.gateway_url


def _wait(what: str, check: Any, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def _seed(gateway: str, bootstrap: str) -> dict[int, int]:
    """A tiny corpus, searchable; search+click sessions, folded; one malformed click event in
    clicks.dlq. Returns the clicks topic's end offsets after it, to find the redriven copy."""
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=gateway, timeout=30, headers=auth) as client:
        items = [{"id": i, "title": title, "text": text, "version": 1,
                  "metadata": {"kind": "animal" if i in ANIMALS else "thing"}}
                 for i, (title, text) in ITEMS.items()]
        assert client.post("/v1/content", json={"items": items}).status_code == 202

        def searchable() -> bool:
            found = client.post("/v1/search", json={"query": "cats", "k": 50})
            return found.status_code == 200 and len(found.json()["results"]) == len(ITEMS)
        _wait("the corpus to be searchable", searchable)

        words = sorted(CODEWORDS)
        for n in range(SESSIONS):
            word = words[n % len(words)]
            session_id = f"console-{uuid.uuid4().hex[:8]}"
            shown = client.post("/v1/search", json={"query": word, "k": len(ITEMS), "session_id": session_id})
            ids = [r["id"] for r in shown.json()["results"]]
            response = client.post("/v1/clicks", json={"events": [{
                "type": "click", "session_id": session_id, "content_id": CODEWORDS[word],
                "rank": ids.index(CODEWORDS[word]) + 1}]})
            assert response.status_code == 202, response.text

        async def send_malformed() -> None:
            producer = AIOKafkaProducer(**kafka_client_options(), bootstrap_servers=bootstrap)
            await producer.start()
            try:
                await producer.send_and_wait("clicks", MALFORMED_CLICK, key=b"console-bad")
            finally:
                await producer.stop()
        asyncio.run(send_malformed())

        def lag_zero() -> bool:
            topics = client.get("/v1/admin/topics").json()
            clicks = next(t for t in topics if t["topic"] == "clicks")
            return any(g["group"] == "sessions" and g["lag"] == 0 for g in clicks["groups"])
        _wait("the sessions service to fold the clicks", lag_zero)

        def parked() -> bool:
            topics = client.get("/v1/admin/dlq?letters=0").json()
            return any(t["topic"] == "clicks.dlq" and t["pending"] > 0 for t in topics)
        _wait("the malformed click in clicks.dlq", parked)
    return asyncio.run(end_offsets(bootstrap, "clicks"))


def test_console_in_headless_chromium(
    driver: Path, console_gateway: str, rollout_services: None, test_settings: Settings, tmp_path: Path
) -> None:
    clicks_end = _seed(console_gateway, test_settings.bootstrap_servers)
    shots = tmp_path / "screenshots"
    options = {"query": "cats", "tenant": TENANT, "minSessions": 10, "trainingTimeoutS": 420,
               "rolloutTimeoutS": 420,
               "dlqTopic": "clicks.dlq", "letterKey": "console-bad"}
    try:
        done = subprocess.run(
            ["node", str(driver), console_gateway, ADMIN_KEY, str(shots), json.dumps(options)],
            capture_output=True, text=True, timeout=1200,
        )
    finally:
        if shots.exists():  # for humans, also when the run failed
            shutil.copytree(shots, test_settings.state_dir / "screenshots", dirs_exist_ok=True)
    assert done.stdout.strip(), f"no report from the driver: {done.stderr[-3000:]}"
    report: dict[str, Any] = json.loads(done.stdout)
    print(json.dumps(report, indent=2))
    assert report["ok"], report.get("error")
    assert report["console_errors"] == [], report["console_errors"]
    assert done.returncode == 0, done.stderr[-3000:]
    steps = {s["name"]: s for s in report["steps"]}
    assert steps["search"]["results"] > 0 and steps["search"]["model_version"]
    # Results explain themselves: a title, the snippet of the matching chunk, and for hybrid
    # the vector and keyword parts of the score; the first result's item page opens.
    assert steps["search"]["title"] and steps["search"]["snippet"]
    assert "vector #" in steps["hybrid search"]["parts"] and "keyword" in steps["hybrid search"]["parts"]
    # The base version chose no weight: its hybrid scores are fused at 0.5, and the page says so.
    times = "\u00d7"  # the multiplication sign the page writes
    hybrid = steps["hybrid search"]
    assert f"0.5 {times} vector + 0.5 {times} keyword" in hybrid["summary"], hybrid
    item = report["item"]
    assert item["hash"].startswith("#/item/") and item["title"] and item["text"]
    assert item["searchable"].startswith("v") and item["nav"] == "Search"
    # A dead-letter link per topic, each opening that topic's letters only.
    links = steps["overview"]["dlq_links"]
    assert links and all(href == f"#/dlq/{topic}" for topic, href in links)
    assert steps["dead letters of a topic"]["topics"] == ["clicks.dlq"]

    # Training passed the gate; deploy and reindex finished; the new version served search.
    assert report["training"]["status"] == "succeeded", report["training"]
    assert report["training"]["mlflow_link"].startswith(test_settings.mlflow_uri)
    new = report["rollout"]["version"]
    assert report["rollout"] == {"version": new, "deploy": "succeeded", "reindex": "succeeded"}
    assert report["search_rolled_out"]["model_version"] == new and report["search_rolled_out"]["results"] > 0
    # The chart holds the held-out scores of the training runs: at least the new version's and
    # its base's, three metrics each.
    assert report["chart"]["bars"] >= 6 and "ndcg@10, mrr@10, recall@10" in report["chart"]["label"]
    # The versions' lineage: the new one from its base, with its gate decision and MLflow run.
    versions = {v["version"]: v for v in report["versions"]}
    lineage = versions[new]["lineage"]
    assert f"from v{steps['training requested']['active_before']}" in lineage and "gate passed" in lineage
    assert versions[new]["mlflow"].startswith(test_settings.mlflow_uri)
    # No Activate button on the active version (it serves already).
    assert [v["activate"] for v in report["versions"] if v["active"]] == [False]
    # Rolled back from the page to the version before it, and search answered with that one.
    before = steps["training requested"]["active_before"]
    assert report["activated"] == before != new
    assert report["search_after"]["model_version"] == before and report["search_after"]["results"] > 0
    assert steps["activated"]["focus_after_escape"] == f"Activate version {before}"

    # The malformed click: inspected, then redriven byte for byte to the clicks topic.
    assert steps["dead letters"]["letter"]["value"].startswith('{"type": "click"')
    assert report["redrive"]["redriven"] >= 1
    again = asyncio.run(read_from(test_settings.bootstrap_servers, "clicks", clicks_end))
    assert any(r.value == MALFORMED_CLICK and r.key == b"console-bad" for r in again)

    assert steps["keyboard"]["first_tab_stop"] == "Skip to content"
    assert steps["keyboard"]["after_skip"] == ["main", "#/dlq/clicks.dlq"]
    assert steps["models chart (stubbed /v1/models)"]["bars"] == 6  # 2 versions x 3 metrics
    assert (shots / "item.png").stat().st_size > 5000 and (shots / "search-hybrid.png").stat().st_size > 5000
    for page in ("overview", "search", "tasks", "models", "dlq"):  # every page, wide and narrow
        assert (shots / f"{page}.png").stat().st_size > 5000
        assert (shots / f"narrow-{page}.png").stat().st_size > 5000
        assert steps[f"narrow {page}"]["horizontal_overflow_px"] <= 0, f"{page} scrolls sideways on a phone"
