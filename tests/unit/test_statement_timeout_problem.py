"""A statement past PostgreSQL's statement_timeout answers 503 with the reason, not 500."""

from __future__ import annotations

import psycopg
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gateway.problems import install


def test_a_statement_timeout_is_a_503_problem() -> None:
    app = FastAPI()
    install(app)

    @app.get("/slow")
    async def slow() -> None:
        raise psycopg.errors.QueryCanceled("canceling statement due to statement timeout")

    answer = TestClient(app).get("/slow")
    assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert "statement timeout" in answer.json()["detail"]
