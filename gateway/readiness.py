"""Readiness of what the platform runs on, probed at the addresses the settings give.

Each probe talks to the component itself where the settings say it is
(`FLYWHEEL_KAFKA_BOOTSTRAP_SERVERS`, `FLYWHEEL_POSTGRES_URL`, `FLYWHEEL_MONGO_URL`,
`FLYWHEEL_MLFLOW_TRACKING_URI`, `FLYWHEEL_TRITON_HTTP_ENDPOINT`, `FLYWHEEL_SERVICE_URLS`, or the
local ports when those are empty), so `/readyz` and the console's component table answer the
same under the local runtime, compose or a cluster. Probes block: run them in a thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx

from consumers.service import SERVICES
from core.config import Settings
from core.kafka_auth import kafka_client_options
from core.serving import version_model_name
from schemas.topics import TOPICS

# What the gateway itself needs to serve requests (MLflow is the trainer's).
GATEWAY_DEPENDENCIES = ("kafka", "postgres", "mongodb", "triton")
PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Health:
    healthy: bool
    detail: str


@dataclass(frozen=True)
class Probe:
    name: str
    url: str
    check: Callable[[], Health]


# --- one probe per kind of component ---------------------------------------------------------
def kafka_health(bootstrap_servers: str, options: dict[str, Any] | None = None) -> Health:
    """A metadata request to the cluster: healthy when it answers (missing topics are named)."""
    from aiokafka.errors import KafkaError

    try:
        topics = asyncio.run(asyncio.wait_for(_list_topics(bootstrap_servers, options), PROBE_TIMEOUT_S))
    except (TimeoutError, KafkaError, OSError) as error:
        return Health(False, f"metadata request to {bootstrap_servers} failed: {error!r}")
    missing = [name for name in TOPICS if name not in topics]
    detail = f"broker answers, {len(topics)} topics"
    if missing:
        detail += f"; missing: {', '.join(missing)}"
    return Health(True, detail)


async def _list_topics(bootstrap_servers: str, options: dict[str, Any] | None) -> set[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        **(kafka_client_options() if options is None else options),
        bootstrap_servers=bootstrap_servers, request_timeout_ms=3000,
    )
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


def postgres_health(dsn: str) -> Health:
    """Connect to the platform's database and read the server and pgvector versions."""
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=2, autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()
            vector = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    except psycopg.Error as error:
        return Health(False, f"cannot connect: {error}")
    return Health(True, f"PostgreSQL {version[0] if version else '?'}, "
                        f"pgvector {vector[0] if vector else 'not installed'}")


def mongo_health(uri: str) -> Health:
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    try:
        client: MongoClient[dict[str, Any]]
        with MongoClient(uri, serverSelectionTimeoutMS=1500) as client:
            info = client.server_info()
    except PyMongoError as error:
        return Health(False, f"cannot connect: {error}")
    if "ferretdbVersion" in info:
        wire = info.get("version", "?")
        return Health(True, f"FerretDB {info['ferretdbVersion']} (MongoDB {wire} wire protocol)")
    return Health(True, f"MongoDB {info.get('version', '?')}")


def mlflow_health(uri: str) -> Health:
    try:
        response = httpx.get(f"{uri}/health", timeout=PROBE_TIMEOUT_S)
        version = httpx.get(f"{uri}/version", timeout=PROBE_TIMEOUT_S).text
    except httpx.HTTPError as error:
        return Health(False, f"cannot connect: {error!r}")
    if response.status_code != 200:
        return Health(False, f"/health answered {response.status_code}")
    return Health(True, f"MLflow {version}")


def triton_health(http_url: str, model_name: str) -> Health:
    """Server live and at least one version of the model READY (its bulk model,
    core.serving.version_model_name). Liveness, not strict readiness: a version that failed to
    load (and was withdrawn) must not mark the whole server down."""
    import tritonclient.http as httpclient

    try:
        client = httpclient.InferenceServerClient(http_url, connection_timeout=2.0, network_timeout=5.0)
        try:
            if not client.is_server_live():
                return Health(False, "server not live")
            index = client.get_model_repository_index()
        finally:
            client.close()
    except Exception as exc:  # refused while starting, timeouts
        return Health(False, f"unreachable: {exc}")
    ours = [m for m in index
            if m.get("version") and m.get("name") == version_model_name(model_name, m["version"])]
    ready = sorted(int(m["version"]) for m in ours if m.get("state") == "READY")
    if not ready:
        states = [f"{m.get('version')}:{m.get('state')}" for m in ours]
        return Health(False, f"model {model_name} not ready ({', '.join(states) or 'not loaded'})")
    return Health(True, f"model {model_name} ready, versions {ready}")


def http_health(url: str) -> Health:
    """A service's own health endpoint: healthy on any answer below 400."""
    try:
        response = httpx.get(url, timeout=PROBE_TIMEOUT_S)
    except httpx.HTTPError as error:
        return Health(False, f"cannot connect: {error!r}")
    path = httpx.URL(url).path
    if response.status_code >= 400:
        return Health(False, f"{path} answered {response.status_code}")
    return Health(True, f"{path} answered {response.status_code}")


# --- the probes of a stack, from its settings --------------------------------------------------
def dependency_probes(settings: Settings) -> list[Probe]:
    s = settings
    triton_url = f"http://{s.triton_http_url}"
    return [
        Probe("kafka", s.bootstrap_servers, lambda: kafka_health(s.bootstrap_servers)),
        Probe("postgres", s.postgres_dsn, lambda: postgres_health(s.postgres_dsn)),
        Probe("mongodb", s.mongo_uri, lambda: mongo_health(s.mongo_uri)),
        Probe("mlflow", s.mlflow_uri, lambda: mlflow_health(s.mlflow_uri)),
        Probe("triton", triton_url, lambda: triton_health(s.triton_http_url, s.triton_model_name)),
    ]


def service_url(settings: Settings, name: str) -> str:
    """Where a service of ours answers: FLYWHEEL_SERVICE_URLS, else its local port."""
    if name in settings.service_urls:
        return settings.service_urls[name].rstrip("/")
    if name == "gateway":
        return settings.gateway_url
    return f"http://{settings.host}:{settings.services_base_port + SERVICES.index(name)}"


def service_probes(settings: Settings) -> list[Probe]:
    probes = []
    for name, path in [*((n, "/health") for n in SERVICES), ("gateway", "/healthz")]:
        url = service_url(settings, name)
        probes.append(Probe(name, url, partial(http_health, url + path)))
    return probes


def run_probes(probes: Iterable[Probe]) -> list[tuple[Probe, Health]]:
    """Every probe at once (each in its own thread), in the order given."""
    probes = list(probes)
    if not probes:
        return []
    with ThreadPoolExecutor(max_workers=len(probes)) as pool:
        return list(zip(probes, pool.map(lambda p: p.check(), probes), strict=True))


def readiness(settings: Settings) -> tuple[bool, dict[str, dict[str, Any]]]:
    """What `/readyz` answers: ready when every dependency of the gateway is healthy."""
    checks = run_probes(p for p in dependency_probes(settings) if p.name in GATEWAY_DEPENDENCIES)
    body = {p.name: {"healthy": h.healthy, "detail": h.detail} for p, h in checks}
    return all(h.healthy for _, h in checks), body


def stack_status(settings: Settings) -> list[dict[str, Any]]:
    """Every component and service as seen from here: name, url, healthy, detail. The PID is
    unknown to the gateway (the process may run on another host); `flywheel status` shows it."""
    checks = run_probes([*dependency_probes(settings), *service_probes(settings)])
    return [{"name": p.name, "url": p.url, "pid": None, "healthy": h.healthy, "detail": h.detail}
            for p, h in checks]
