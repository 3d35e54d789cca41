"""Every wait has an end: a Triton that accepts connections but never answers (SIGSTOP) makes a
search fail fast with 503 and the reason, instead of holding the request for minutes."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from core.api_keys import hash_key
from core.config import Settings
from infra.process import Component
from infra.services import gateway_service
from tests.conftest import _run

pytestmark = pytest.mark.reliability

SECRET = "key-deadline-search"
DEADLINE_S = 3.0


@pytest.fixture(scope="module")
def gateway(
    test_settings: Settings, kafka: Component, postgres: Component, mongodb: Component,
    triton: Component, indexer_service: Component,
) -> Iterator[str]:
    key = {"key_id": "deadline", "key_sha256": hash_key(SECRET), "tenant": "deadline", "scopes": ["search"]}
    settings = test_settings.model_copy(update={
        "api_keys_json": json.dumps([key]), "triton_query_deadline_s": DEADLINE_S,
    })
    for _ in _run(gateway_service(settings)):
        yield settings.gateway_url


def test_a_search_fails_fast_with_503_while_triton_hangs_and_recovers_after(
    gateway: str, triton: Component,
) -> None:
    headers = {"Authorization": f"Bearer {SECRET}"}
    with httpx.Client(base_url=gateway, timeout=120) as client:
        warm = client.post("/v1/search", json={"query": "warm up", "k": 3}, headers=headers)
        assert warm.status_code == 200, warm.text
        pid = triton.pid()
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # the port stays open; nothing answers
        try:
            began = time.monotonic()
            response = client.post("/v1/search", json={"query": "anyone there?", "k": 3}, headers=headers)
            took = time.monotonic() - began
        finally:
            os.kill(pid, signal.SIGCONT)
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert f"did not answer a query within {DEADLINE_S:g} s" in response.json()["detail"]
        assert response.headers["retry-after"] == "5"
        assert took < DEADLINE_S + 5  # not 6 attempts of 60 s
        assert client.get("/healthz").status_code == 200
        again = client.post("/v1/search", json={"query": "back again", "k": 3}, headers=headers)
        assert again.status_code == 200, again.text
