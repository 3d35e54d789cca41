"""compose.yaml has every service the code expects, wired to its dependencies."""

from __future__ import annotations

import importlib
import os
import re
import tomllib
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlparse

import pytest
import yaml

from consumers.service import SERVICES
from core.config import REPO_ROOT, Settings

COMPOSE = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())
OUR_SERVICES = [*SERVICES, "gateway"]
DEPENDENCIES = {"kafka", "postgres", "mongo", "mlflow", "triton", "minio", "otel-collector"}


def service(name: str) -> dict[str, Any]:
    services: dict[str, dict[str, Any]] = COMPOSE["services"]
    assert name in services, f"compose.yaml has no service {name!r}"
    return services[name]


def endpoint_hosts(environment: dict[str, str]) -> dict[str, str]:
    """The compose host each FLYWHEEL_* endpoint variable points at."""
    with mock.patch.dict(os.environ, {k: str(v) for k, v in environment.items()}):
        settings = Settings()
    return {
        "kafka": settings.bootstrap_servers.split(":")[0],
        "postgres": urlparse(settings.postgres_dsn).hostname or "",
        "mongo": urlparse(settings.mongo_uri).hostname or "",
        "mlflow": urlparse(settings.mlflow_uri).hostname or "",
        "triton": settings.triton_grpc_url.split(":")[0],
    }


def test_official_images_for_components() -> None:
    assert service("kafka")["image"].startswith("apache/kafka:4")
    assert service("postgres")["image"].startswith("pgvector/pgvector")
    assert service("mongo")["image"].startswith("mongo")
    assert "nvcr.io/nvidia/tritonserver" in (REPO_ROOT / "infra" / "Dockerfile.triton").read_text()
    for name in DEPENDENCIES:
        service(name)


@pytest.mark.parametrize("name", OUR_SERVICES)
def test_our_services_are_wired(name: str) -> None:
    spec = service(name)
    assert spec["build"]["dockerfile"] == "infra/Dockerfile"
    assert (REPO_ROOT / spec["build"]["dockerfile"]).exists()
    for component, host in endpoint_hosts(spec["environment"]).items():
        assert host == component, f"{name}: {component} endpoint points at {host!r}"
        service(host)
    depends = spec["depends_on"]
    for dependency in ("postgres", "mongo", "mlflow", "triton"):
        assert depends[dependency]["condition"] == "service_healthy"
        assert "healthcheck" in service(dependency), f"{dependency} needs a healthcheck"
    assert depends["kafka-init"]["condition"] == "service_completed_successfully"
    assert "healthcheck" in spec
    module_path, attribute = spec["command"][1].split(":")
    assert hasattr(importlib.import_module(module_path), attribute)


def test_gateway_published_on_8080() -> None:
    assert "8080:8080" in service("gateway")["ports"]


def test_gpu_reserved_for_triton() -> None:
    devices = service("triton")["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]


def test_deployer_shares_the_triton_model_repository() -> None:
    assert "triton-models:/models" in service("deployer")["volumes"]
    assert "triton-models:/models" in service("triton")["volumes"]
    assert "--model-repository=/models" in service("triton")["command"]


def test_init_jobs_run_our_modules() -> None:
    """Each init job runs `python -m <module>` of a module that has a `__main__` entry point
    (running them is tests/integration/test_compose_run.py)."""
    for job in ("kafka-init", "triton-models"):
        command = service(job)["command"]
        assert command[:2] == ["python", "-m"], command
        module = importlib.import_module(command[2])
        assert module.__file__ and 'if __name__ == "__main__":' in Path(module.__file__).read_text()


def test_the_image_holds_every_package() -> None:
    """infra/Dockerfile copies every package pyproject.toml installs, so `pip install .` in the
    image installs them all (a missing one fails only at run time, inside the container)."""
    setuptools = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {name.rstrip("*") for name in setuptools["packages"]["find"]["include"]}
    dockerfile = (REPO_ROOT / "infra" / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+) \1$", dockerfile, re.MULTILINE))
    assert packages <= copied, f"not copied into the image: {sorted(packages - copied)}"


def test_state_and_model_repository_writable_by_the_service_user() -> None:
    dockerfile = (REPO_ROOT / "infra" / "Dockerfile").read_text()
    state_dir = service("gateway")["environment"]["FLYWHEEL_STATE_DIR"]
    assert "USER flywheel" in dockerfile
    assert re.search(rf"chown flywheel:flywheel {state_dir} /models", dockerfile)


def test_environments_name_compose_hosts_only() -> None:
    """Nothing in a project service's environment points at this host: inside a container that
    would be the container itself."""
    for name, spec in COMPOSE["services"].items():
        if spec.get("build", {}).get("dockerfile") == "infra/Dockerfile":
            for key, value in spec.get("environment", {}).items():
                assert not re.search(r"localhost|127\.0\.0\.1", str(value)), (name, key, value)


def test_triton_decides_its_instance_kind() -> None:
    """The init job runs without a GPU; the config it writes lets Triton pick the kind."""
    command = service("triton-models")["command"]
    assert "--instance-kind" not in command


@pytest.mark.parametrize("name", OUR_SERVICES)
def test_each_service_is_its_own_kafka_principal(name: str) -> None:
    from infra.kafka_acls import env_name, plan

    environment = service(name)["environment"]
    assert environment["FLYWHEEL_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert environment["FLYWHEEL_KAFKA_USERNAME"] == name and name in plan(Settings())
    assert environment["FLYWHEEL_KAFKA_PASSWORD"].startswith(f"${{{env_name(name)}:?")
    init = service("kafka-init")
    assert init["environment"]["FLYWHEEL_KAFKA_USERNAME"] == "admin"
    assert init["depends_on"]["kafka-security"]["condition"] == "service_completed_successfully"


def test_the_compose_broker_gets_the_acls_of_the_local_one() -> None:
    """infra/kafka-compose/acls.txt is what `python -m infra.kafka_acls compose` writes."""
    from infra.kafka_acls import compose_lines

    written = (REPO_ROOT / "infra" / "kafka-compose" / "acls.txt").read_text().split("\n")
    assert [line for line in written if line] == compose_lines(Settings())
    assert service("kafka-security")["command"] == ["sh", "/flywheel/security.sh"]
