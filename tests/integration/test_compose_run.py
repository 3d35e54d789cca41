"""compose.yaml runs as written, proven without Docker: every project service and init job of
compose.yaml runs its own command with the environment compose and the image give it (and
nothing else), its hostnames mapped to the test stack's components, and does its job.

- `triton-models` writes a model repository that a real Triton then loads as it is;
- `kafka-init` makes sure the registry's topics exist on the broker it is pointed at;
- each consumer service and the gateway passes its own compose healthcheck;
- the gateway's /readyz answers 200, and 503 once a dependency (Triton) is really down.

A container has its own network namespace, so each command's `--host 0.0.0.0 --port 8090` is
mapped to a free local port, as is the same port in its healthcheck.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from core.adapters.triton_repository import model_versions, version_root
from core.config import REPO_ROOT, Settings
from core.kafka_auth import local_credentials
from infra.process import Component
from infra.triton import Triton
from schemas.topics import TOPICS

pytestmark = pytest.mark.integration

COMPOSE: dict[str, Any] = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())["services"]
PROJECT = [name for name, spec in COMPOSE.items()
           if spec.get("build", {}).get("dockerfile") == "infra/Dockerfile"]
INIT_JOBS = ["kafka-init", "triton-models"]
SERVICES = [name for name in PROJECT if name not in INIT_JOBS]
# Ports of this module's own processes: above the test stack's [base, base + 20).
PORT_SHIFT = 60


def image_environment() -> dict[str, str]:
    """What the image's ENV lines set (infra/Dockerfile)."""
    env: dict[str, str] = {}
    for line in (REPO_ROOT / "infra" / "Dockerfile").read_text().splitlines():
        if line.startswith("ENV "):
            for token in shlex.split(line[4:]):
                key, _, value = token.partition("=")
                env[key] = value
    return env


class ComposeWorld:
    """compose.yaml's names mapped onto this machine: hostnames, volumes, service ports."""

    def __init__(self, settings: Settings, root: Path) -> None:
        base = settings.kafka_port + PORT_SHIFT
        self.settings = settings
        self.root = root
        self.triton = {"http": base, "grpc": base + 1, "metrics": base + 2}
        self.ports = {name: base + 3 + index for index, name in enumerate(SERVICES)}
        self.models = root / "models"
        self.hosts = {
            "kafka:9092": f"127.0.0.1:{settings.kafka_port}",
            "postgres:5432": f"127.0.0.1:{settings.postgres_port}",
            "mongo:27017": f"127.0.0.1:{settings.mongo_port}",
            "mlflow:5000": f"127.0.0.1:{settings.mlflow_port}",
            "triton:8000": f"127.0.0.1:{self.triton['http']}",
            "triton:8001": f"127.0.0.1:{self.triton['grpc']}",
            "connect:8083": f"127.0.0.1:{settings.connect_port}",
            # No collector here: spans go to a closed port and are dropped.
            "otel-collector:4317": f"127.0.0.1:{base + 19}",
            **{f"{name}:{self.container_port(name)}": f"127.0.0.1:{port}"
               for name, port in self.ports.items()},
        }
        self.paths = {"/var/lib/flywheel": str(root / "state"), "/models": str(self.models)}

    @staticmethod
    def container_port(name: str) -> int:
        command = COMPOSE[name]["command"]
        return int(command[command.index("--port") + 1])

    def map(self, value: str) -> str:
        value = self.interpolate(value)
        for compose_name, local in self.hosts.items():
            value = value.replace(compose_name, local)
        return self.paths.get(value, value)

    def interpolate(self, value: str) -> str:
        """Compose's `${VAR:?message}` from .env: here the Kafka passwords are the test broker's
        (KAFKA_<PRINCIPAL>_PASSWORD, as `python -m infra.kafka_acls env` names them)."""
        passwords = local_credentials(self.settings)

        def password(match: re.Match[str]) -> str:
            principal = match["name"].lower()
            assert principal in passwords, f"compose names an unknown principal: {match[0]}"
            return passwords[principal]
        return re.sub(r"\$\{KAFKA_(?P<name>[A-Z]+)_PASSWORD(?::\?[^}]*)?\}", password, value)

    def environment(self, name: str) -> dict[str, str]:
        """The image's ENV plus the service's compose environment, mapped; nothing from ours."""
        compose_env = {key: str(value) for key, value in COMPOSE[name].get("environment", {}).items()}
        return {
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.root / "home"),
            **image_environment(),
            **{key: self.map(value) for key, value in compose_env.items()},
        }

    def command(self, name: str) -> list[str]:
        command = [self.map(arg) for arg in COMPOSE[name]["command"]]
        if "--port" in command:
            command[command.index("--port") + 1] = str(self.ports[name])
            command[command.index("--host") + 1] = "127.0.0.1"
        return command

    def healthcheck(self, name: str) -> list[str]:
        test = COMPOSE[name]["healthcheck"]["test"]
        assert test[0] == "CMD", test
        local = f"127.0.0.1:{self.ports[name]}"
        return [arg.replace(f"127.0.0.1:{self.container_port(name)}", local) for arg in test[1:]]

    def run(self, name: str, timeout: float) -> subprocess.CompletedProcess[str]:
        """Run a job to completion, as compose runs an init container."""
        return subprocess.run(self.command(name), env=self.environment(name), cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=timeout)

    def start(self, name: str) -> subprocess.Popen[bytes]:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - the process owns it
        return subprocess.Popen(self.command(name), env=self.environment(name), cwd=REPO_ROOT,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")[-3000:]


def stop(process: subprocess.Popen[bytes], timeout: float = 90) -> int:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


@pytest.fixture(scope="module")
def world(test_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> ComposeWorld:
    root = tmp_path_factory.mktemp("compose")
    (root / "home").mkdir()
    return ComposeWorld(test_settings, root)


@pytest.fixture(scope="module")
def compose_triton(world: ComposeWorld, test_settings: Settings) -> Iterator[Component]:
    """The init job's repository, served by a Triton that leaves it as written."""
    job = world.run("triton-models", timeout=600)
    assert job.returncode == 0, job.stdout + job.stderr
    settings = test_settings.model_copy(update={
        "state_dir": world.root / "triton-state",
        "triton_repository_dir": world.models,
        "triton_http_port": world.triton["http"],
        "triton_grpc_port": world.triton["grpc"],
        "triton_metrics_port": world.triton["metrics"],
    })
    triton = Triton(settings, write_repository=False)
    triton.start()
    try:
        yield triton
    finally:
        triton.stop()


def test_every_project_service_is_covered() -> None:
    assert set(INIT_JOBS) <= set(PROJECT)
    assert {"indexer", "sessions", "trainer", "deployer", "reindexer", "improver", "gateway"} <= set(SERVICES)


def test_triton_models_job_writes_a_repository_triton_loads(
    world: ComposeWorld, compose_triton: Component, test_settings: Settings
) -> None:
    name = test_settings.triton_model_name
    assert model_versions(world.models, name) == [1]
    config = (version_root(world.models, name, 1) / "config.pbtxt").read_text()
    # The init container has no say in where Triton runs the model.
    assert "kind:" not in config
    health = compose_triton.check()
    assert health.healthy and "versions [1]" in health.detail, health.detail
    # Serving: one embedding through the compose-written model.
    import tritonclient.http as httpclient

    from core.serving import TRITON_INPUT, TRITON_OUTPUT, version_model_name

    client = httpclient.InferenceServerClient(f"127.0.0.1:{world.triton['http']}")
    try:
        import numpy as np

        text = httpclient.InferInput(TRITON_INPUT, [1, 1], "BYTES")
        text.set_data_from_numpy(np.array([[b"compose runs as written"]], dtype=object))
        vector = client.infer(version_model_name(name, 1), [text]).as_numpy(TRITON_OUTPUT)
    finally:
        client.close()
    assert vector is not None and vector.shape == (1, 384)


def test_kafka_init_job_creates_the_registry_topics(world: ComposeWorld, kafka: Component) -> None:
    job = world.run("kafka-init", timeout=120)
    assert job.returncode == 0, job.stdout + job.stderr
    assert f"127.0.0.1:{world.settings.kafka_port}: created" in job.stdout
    health = kafka.check()
    assert health.healthy and "missing" not in health.detail, health.detail
    assert len(TOPICS) >= 5


@pytest.mark.parametrize("name", [s for s in SERVICES if s != "gateway"])
def test_consumer_service_runs_and_passes_its_healthcheck(
    name: str, world: ComposeWorld, kafka: Component, postgres: Component, mongodb: Component,
    mlflow_server: Component, compose_triton: Component,
) -> None:
    process = world.start(name)
    try:
        wait_healthy(world, name, process)
    finally:
        code = stop(process)
    # uvicorn re-raises SIGTERM once it has shut down, as `docker stop` expects.
    assert code in (0, -signal.SIGTERM), f"{name} did not stop cleanly ({code}):\n{world.log(name)}"
    assert "Application shutdown complete" in world.log(name)


def test_gateway_runs_and_is_ready_only_while_its_dependencies_are(
    world: ComposeWorld, kafka: Component, postgres: Component, mongodb: Component,
    mlflow_server: Component, compose_triton: Component,
) -> None:
    process = world.start("gateway")
    try:
        wait_healthy(world, "gateway", process)
        url = f"http://127.0.0.1:{world.ports['gateway']}/readyz"
        ready = httpx.get(url, timeout=30)
        assert ready.status_code == 200, ready.text
        assert set(ready.json()["components"]) == {"kafka", "postgres", "mongodb", "triton"}
        compose_triton.stop()
        down = httpx.get(url, timeout=30)
        assert down.status_code == 503, down.text
        components = down.json()["components"]
        assert not components["triton"]["healthy"]
        assert all(components[n]["healthy"] for n in ("kafka", "postgres", "mongodb")), components
    finally:
        stop(process)


def wait_healthy(
    world: ComposeWorld, name: str, process: subprocess.Popen[bytes], timeout: float = 240
) -> None:
    """Run the service's compose healthcheck until it passes, as compose's `service_healthy`."""
    check = world.healthcheck(name)
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, f"{name} exited ({process.returncode}):\n{world.log(name)}"
        result = subprocess.run(check, env=world.environment(name), capture_output=True, timeout=30)
        if result.returncode == 0:
            return
        assert time.monotonic() < deadline, f"{name} never passed its healthcheck:\n{world.log(name)}"
        time.sleep(1)

