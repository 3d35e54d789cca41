"""The console's static assets and the admin endpoints' auth, without any component running."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi.testclient import TestClient

from core.api_keys import hash_key
from core.config import Settings
from gateway.main import create_app
from gateway.routes.console import STATIC_DIR
from gateway.security import RateLimiter

KEYS = [
    {"key_id": "admin", "key_sha256": hash_key("admin-key"), "tenant": "t", "scopes": ["admin"]},
    {"key_id": "search", "key_sha256": hash_key("search-key"), "tenant": "t", "scopes": ["search"]},
]


@contextmanager
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings(api_keys_json=json.dumps(KEYS)))) as c:
        c.app.state.resources.limiter = RateLimiter(100, 100)  # type: ignore[attr-defined]
        yield c


def test_console_page_and_assets_are_served_from_the_package() -> None:
    with client() as c:
        page = c.get("/console")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        for src in re.findall(r'(?:src|href)="(/console/static/[^"]+)"', page.text):
            asset = c.get(src)
            assert asset.status_code == 200, src
        assert c.get("/console/static/app.js").headers["content-type"].startswith("text/javascript")
        assert c.get("/console/", follow_redirects=False).status_code == 308
        for bad in ("/console/static/..%2F..%2Fmain.py", "/console/static/.hidden.js",
                    "/console/static/x.py"):
            response = c.get(bad)
            assert response.status_code == 404
            assert response.headers["content-type"] == "application/problem+json"


def test_assets_fetch_nothing_from_elsewhere() -> None:
    for path in STATIC_DIR.iterdir():
        text = path.read_text()
        # Only the SVG namespace is an absolute URL; no CDN, no external fonts or scripts.
        assert set(re.findall(r"https?://[^\s\"'`)]+", text)) <= {"http://www.w3.org/2000/svg"}, path


def test_admin_endpoints_need_the_admin_scope() -> None:
    with client() as c:
        for path in ("/v1/admin/status", "/v1/admin/topics", "/v1/admin/tenants", "/v1/admin/dlq",
                     "/v1/admin/dlq/clicks/0/0"):
            assert c.get(path).status_code == 401
            forbidden = c.get(path, headers={"Authorization": "Bearer search-key"})
            assert forbidden.status_code == 403 and forbidden.json()["detail"].endswith("scope")
        assert c.post("/v1/admin/dlq/clicks/redrive", headers={"X-API-Key": "search-key"}).status_code == 403


def test_what_spans_tenants_needs_the_operator_scope() -> None:
    with client() as c:
        for path in ("/v1/admin/status", "/v1/admin/topics"):
            forbidden = c.get(path, headers={"Authorization": "Bearer admin-key"})
            assert forbidden.status_code == 403, path
            assert forbidden.json()["detail"].endswith("'operator' scope")


def test_unknown_dead_letter_topic_is_a_problem_404() -> None:
    with client() as c:
        response = c.get("/v1/admin/dlq/nope/0/0", headers={"Authorization": "Bearer admin-key"})
        assert response.status_code == 404 and "unknown topic" in response.json()["detail"]
