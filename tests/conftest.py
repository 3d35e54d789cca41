"""Session-wide real components for integration and e2e tests.

The test stack has its own state directory and ports, so a running `make up` is untouched.
Each component starts on first use and is stopped at the end of the session, also when
tests fail.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from consumers.service import SERVICES
from core.adapters.pgvector import PgVectorStore
from core.adapters.session_store import MongoSessionStore
from core.adapters.task_store import TaskStore
from core.adapters.triton_embedder import TritonEmbedder
from core.api_keys import hash_key
from core.bootstrap import build_embedder, build_session_store, build_store, build_task_store
from core.config import REPO_ROOT, Settings, get_settings
from infra.ferretdb import FerretDB
from infra.kafka import Kafka
from infra.mlflow_server import MLflowServer
from infra.postgres import Postgres
from infra.process import Component
from infra.services import consumer_service, gateway_service
from infra.stack import all_components
from producers.publisher import Publisher

# Two suites may run side by side (e.g. two worktrees) with their own offset and directory.
PORT_OFFSET = int(os.environ.get("FLYWHEEL_TEST_PORT_OFFSET", "0"))
TEST_STATE_DIR = Path(os.environ.get("FLYWHEEL_TEST_STATE_DIR", REPO_ROOT / ".flywheel-test"))

# The test stack's broker runs with SASL/SCRAM and ACLs, so every test goes through them: the
# tests are the operator (`admin`, whose password the broker is formatted with), each service
# its own principal (infra/kafka_acls.py).
os.environ["FLYWHEEL_KAFKA_SECURITY_PROTOCOL"] = "SASL_PLAINTEXT"
os.environ["FLYWHEEL_KAFKA_USERNAME"] = "admin"
os.environ.setdefault("FLYWHEEL_KAFKA_PASSWORD", secrets.token_urlsafe(24))
get_settings.cache_clear()


# Cheap and independent first. Rollouts replay content-upserted from the start, so they run
# before the e2e and reliability tests fill it; the tests that restart components run last.
_ORDER = ("unit", "integration", "rollout", "e2e", "reliability")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("rollout"):
            return _ORDER.index("rollout")
        if item.get_closest_marker("reliability"):
            return _ORDER.index("reliability")
        if item.get_closest_marker("e2e"):
            return _ORDER.index("e2e")
        return _ORDER.index("integration") if item.get_closest_marker("integration") else 0

    items.sort(key=rank)  # stable: file order within a rank


def make_test_settings() -> Settings:
    """Every port of a test stack lies in [base, base + 20): offsets that are multiples of
    100 give stacks that never share a port."""
    base = 30000 + PORT_OFFSET
    return Settings(
        state_dir=TEST_STATE_DIR,
        tools_dir=REPO_ROOT / ".flywheel" / "tools",
        kafka_port=base,
        kafka_controller_port=base + 1,
        postgres_port=base + 2,
        mongo_port=base + 3,
        mlflow_port=base + 4,
        triton_http_port=base + 5,
        triton_grpc_port=base + 6,
        triton_metrics_port=base + 7,
        gateway_port=base + 8,
        connect_port=base + 9,
        services_base_port=base + 10,
        prometheus_port=base + 19,
        prometheus_scrape_interval_s=1.0,
        kafka_partitions=3,
        startup_timeout_s=240,
    )


@pytest.fixture(scope="session")
def test_settings() -> Iterator[Settings]:
    settings = make_test_settings()
    # Leftovers of an interrupted run: stop them by PID, then start from empty state.
    for component in all_components(settings):
        component.stop()
    shutil.rmtree(settings.state_dir, ignore_errors=True)
    settings.state_dir.mkdir(parents=True)
    yield settings


def _run(component: Component) -> Iterator[Component]:
    component.start()
    try:
        yield component
    finally:
        component.stop()


def gateway_with_keys(
    test_settings: Settings, keys: dict[str, tuple[str, list[str]]], secret: dict[str, str]
) -> Iterator[str]:
    """A gateway (its URL) that knows exactly `keys`: key id -> (tenant, scopes), with the
    plaintext of each in `secret`."""
    records = [{"key_id": name, "key_sha256": hash_key(secret[name]), "tenant": tenant, "scopes": scopes}
               for name, (tenant, scopes) in keys.items()]
    settings = test_settings.model_copy(update={"api_keys_json": json.dumps(records)})
    for _ in _run(gateway_service(settings)):
        yield settings.gateway_url


@pytest.fixture(scope="session")
def spawned(test_settings: Settings) -> Iterator[dict[str, tuple[Component, bool]]]:
    """The real components most tests need, spawned together when the first of them is asked
    for, so their start-ups overlap as in `flywheel up`; each fixture below waits for its own.
    Whatever a session never asked for is stopped here at its end."""
    from infra.triton import Triton

    components = [Kafka(test_settings), Postgres(test_settings), FerretDB(test_settings),
                  MLflowServer(test_settings), Triton(test_settings)]
    yield {c.name: (c, c.begin_start()) for c in components}
    for component in components:
        component.stop()


def _ready(spawned: dict[str, tuple[Component, bool]], name: str) -> Iterator[Component]:
    component, fresh = spawned[name]
    component.finish_start(fresh)
    try:
        yield component
    finally:
        component.stop()


@pytest.fixture(scope="session")
def kafka(spawned: dict[str, tuple[Component, bool]]) -> Iterator[Component]:
    yield from _ready(spawned, "kafka")


@pytest.fixture(scope="session")
def postgres(spawned: dict[str, tuple[Component, bool]]) -> Iterator[Component]:
    yield from _ready(spawned, "postgres")


@pytest.fixture(scope="session")
def mongodb(spawned: dict[str, tuple[Component, bool]]) -> Iterator[Component]:
    yield from _ready(spawned, "mongodb")


@pytest.fixture(scope="session")
def mlflow_server(spawned: dict[str, tuple[Component, bool]]) -> Iterator[Component]:
    yield from _ready(spawned, "mlflow")


@pytest.fixture(scope="session")
def triton(spawned: dict[str, tuple[Component, bool]]) -> Iterator[Component]:
    yield from _ready(spawned, "triton")


@pytest.fixture(scope="session")
def prometheus(test_settings: Settings) -> Iterator[Component]:
    """A real Prometheus scraping the test stack every second: whichever of its services, its
    gateway and Triton are up (infra/prometheus.py)."""
    from infra.prometheus import Prometheus

    yield from _run(Prometheus(test_settings))


@pytest.fixture(scope="session")
def connect(kafka: Component, test_settings: Settings) -> Iterator[Component]:
    from infra.kafka_connect import KafkaConnect

    yield from _run(KafkaConnect(test_settings))


def _service(settings: Settings, name: str) -> Component:
    return consumer_service(settings, name, SERVICES.index(name))


@pytest.fixture(scope="session")
def indexer_service(
    kafka: Component, postgres: Component, triton: Component, test_settings: Settings
) -> Iterator[Component]:
    yield from _run(_service(test_settings, "indexer"))


@pytest.fixture(scope="session")
def sources_service(kafka: Component, postgres: Component, test_settings: Settings) -> Iterator[Component]:
    yield from _run(_service(test_settings, "sources"))


@pytest_asyncio.fixture(scope="session")
async def store(postgres: Component, test_settings: Settings) -> AsyncIterator[PgVectorStore]:
    store = await build_store(test_settings)
    yield store
    await store.close()


@pytest_asyncio.fixture(scope="session")
async def embedder(triton: Component, test_settings: Settings) -> AsyncIterator[TritonEmbedder]:
    embedder = build_embedder(test_settings)
    yield embedder
    await embedder.close()


@pytest_asyncio.fixture(scope="session")
async def publisher(kafka: Component, test_settings: Settings) -> AsyncIterator[Publisher]:
    async with Publisher(test_settings.bootstrap_servers, source="tests") as publisher:
        yield publisher


# --- sessions and trainer services ----------------------------------------------
@pytest.fixture(scope="session")
def sessions_service(kafka: Component, mongodb: Component, test_settings: Settings) -> Iterator[Component]:
    yield from _run(_service(test_settings, "sessions"))


@pytest.fixture(scope="session")
def trainer_service(
    kafka: Component, mongodb: Component, postgres: Component, mlflow_server: Component,
    test_settings: Settings,
) -> Iterator[Component]:
    # Small, fast runs: tiny batches, one hard negative per pair, a high learning rate.
    settings = test_settings.model_copy(update={
        "training_batch_size": 16, "training_learning_rate": 2e-4, "training_max_negatives": 1,
    })
    yield from _run(_service(settings, "trainer"))


@pytest_asyncio.fixture(scope="session")
async def session_store(mongodb: Component, test_settings: Settings) -> AsyncIterator[MongoSessionStore]:
    sessions = await build_session_store(test_settings)
    yield sessions
    await sessions.close()


@pytest_asyncio.fixture(scope="session")
async def task_store(mongodb: Component, test_settings: Settings) -> AsyncIterator[TaskStore]:
    tasks = await build_task_store(test_settings)
    yield tasks
    await tasks.close()
