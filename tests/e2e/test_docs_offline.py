"""/docs renders in Debian's headless Chromium with every request outside the gateway blocked
(tests/console/docs.mjs aborts them and maps DNS to nothing), and lists every operation of the
OpenAPI document: Swagger UI's assets come from the gateway itself, not a CDN.

Needs no component: the gateway runs in a subprocess with its dependencies down (the page and
the document need none of them). Needs `node`/`npm` and `/usr/bin/chromium`, as
tests/e2e/test_console.py; skipped with the reason when they are missing.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.config import REPO_ROOT
from tests.e2e.test_console import CHROMIUM, DRIVER_DIR, driver  # noqa: F401 - the fixture

pytestmark = pytest.mark.e2e

SERVE = """
import sys, uvicorn
from core.config import Settings
from gateway.main import create_app
uvicorn.run(create_app(Settings(api_keys_json="[]")), host="127.0.0.1", port=int(sys.argv[1]),
            log_level="warning")
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def docs_gateway() -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-c", SERVE, str(port)], cwd=REPO_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                error = process.stderr.read() if process.stderr else b""
                raise RuntimeError(f"the gateway did not start: {error!r}")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_docs_render_offline_and_list_every_operation(driver: Path, docs_gateway: str) -> None:  # noqa: F811
    document = httpx.get(f"{docs_gateway}/openapi.json", timeout=10).json()
    expected = {f"{method.upper()} {path}" for path, ops in document["paths"].items() for method in ops}
    run = subprocess.run(["node", str(DRIVER_DIR / "docs.mjs"), docs_gateway], capture_output=True, text=True,
                         timeout=180, env={**os.environ, "CHROMIUM": str(CHROMIUM)})
    report = json.loads(run.stdout) if run.stdout.strip().startswith("{") else {"stderr": run.stderr}
    page = report.get("pages", {}).get("/docs")
    assert run.returncode == 0 and page, report
    assert page["outside"] == [] and page["failed"] == [], page
    assert page["console_errors"] == [], page["console_errors"]
    assert set(page["operations"]) == expected
    assert page["title"].startswith(document["info"]["title"])
