"""The admin web console in Debian's headless Chromium, driven by playwright-core (npm), against
the real stack: sign in with a key, search, request training and watch its task finish,
activate a version and search with it, look at every page at 1280x800 and 390x844.

Needs `node`/`npm` and `/usr/bin/chromium` (`make system-deps` installs Chromium when root);
skipped with the reason when they are missing. Screenshots land in the test's tmp path and
are copied to <test state dir>/screenshots.
"""

from __future__ import annotations

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

from core.api_keys import hash_key
from core.config import REPO_ROOT, Settings
from infra.process import Component
from infra.services import gateway_service
from tests.conftest import _run

pytestmark = pytest.mark.e2e

DRIVER_DIR = REPO_ROOT / "tests" / "console"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
ADMIN_KEY = f"key-console-{uuid.uuid4().hex}"
TENANT = "console"
DOCS = {
    "c-cat": ("Cats", "The domestic cat is a small carnivorous mammal that purrs and hunts mice.", "animal"),
    "c-dog": ("Dogs", "Dogs are loyal animals that bark, fetch sticks and guard the house.", "animal"),
    "c-owl": ("Owls", "Owls are birds of prey that hunt small animals at night.", "animal"),
    "c-rocket": ("Rockets", "A rocket engine burns propellant to produce thrust and reach orbit.", "space"),
    "c-bread": ("Bread", "Bread is baked from a dough of flour and water, leavened with yeast.", "food"),
    "c-tea": ("Tea", "Green tea is brewed from the leaves of Camellia sinensis.", "food"),
}
# (query, the item clicked): a few sessions, so the trainer has something to look at.
SESSIONS = [("a pet that purrs", "c-cat"), ("an animal that barks", "c-dog"),
            ("bird hunting at night", "c-owl"), ("baking with yeast", "c-bread"),
            ("brewing green tea", "c-tea"), ("reaching orbit", "c-rocket")]


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
def console_gateway(
    test_settings: Settings, kafka: Component, postgres: Component, mongodb: Component, triton: Component,
    indexer_service: Component, sessions_service: Component, trainer_service: Component,
) -> Iterator[str]:
    records = [{"key_id": "console-admin", "key_sha256": hash_key(ADMIN_KEY), "tenant": TENANT,
                "scopes": ["publish", "search", "admin"]}]
    settings = test_settings.model_copy(update={"api_keys_json": json.dumps(records)})
    for _ in _run(gateway_service(settings)):
        yield settings.gateway_url


def _seed(gateway: str) -> None:
    """A tiny corpus, searchable, and a handful of search+click sessions."""
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=gateway, timeout=30, headers=auth) as client:
        items = [{"id": i, "title": t, "text": x, "version": 1, "metadata": {"kind": k}}
                 for i, (t, x, k) in DOCS.items()]
        assert client.post("/v1/content", json={"items": items}).status_code == 202
        deadline = time.monotonic() + 120
        while True:
            found = client.post("/v1/search", json={"query": "cats", "k": 10})
            if found.status_code == 200 and len(found.json()["results"]) == len(DOCS):
                break
            assert time.monotonic() < deadline, f"corpus not searchable: {found.text}"
            time.sleep(0.5)
        for query, clicked in SESSIONS:
            session_id = f"console-{uuid.uuid4().hex[:8]}"
            shown = client.post("/v1/search", json={"query": query, "k": 4, "session_id": session_id})
            ids = [r["id"] for r in shown.json()["results"]]
            rank = ids.index(clicked) + 1 if clicked in ids else 1
            response = client.post("/v1/clicks", json={"events": [
                {"type": "click", "session_id": session_id, "content_id": ids[rank - 1], "rank": rank}]})
            assert response.status_code == 202, response.text


def test_console_in_headless_chromium(
    driver: Path, console_gateway: str, test_settings: Settings, tmp_path: Path
) -> None:
    _seed(console_gateway)
    time.sleep(2)  # the sessions service folds the clicks in
    shots = tmp_path / "screenshots"
    options = {"query": "cats", "minSessions": 3, "trainingTimeoutS": 420}
    try:
        done = subprocess.run(
            ["node", str(driver), console_gateway, ADMIN_KEY, str(shots), json.dumps(options)],
            capture_output=True, text=True, timeout=600,
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
    assert report["training"]["status"] in ("succeeded", "rejected"), report["training"]
    assert report["search_after"]["model_version"] == report["activated"]
    assert steps["activated"]["focus_after_escape"] == f"Activate version {report['activated']}"
    assert steps["keyboard"]["first_tab_stop"] == "Skip to content"
    assert steps["keyboard"]["after_skip"] == ["main", "#/dlq"]
    assert steps["models chart (stubbed /v1/models)"]["bars"] == 6  # 2 versions x 3 metrics
    for page in ("overview", "search", "tasks", "models", "dlq"):  # every page, wide and narrow
        assert (shots / f"{page}.png").stat().st_size > 5000
        assert (shots / f"narrow-{page}.png").stat().st_size > 5000
        assert steps[f"narrow {page}"]["horizontal_overflow_px"] <= 0, f"{page} scrolls sideways on a phone"
