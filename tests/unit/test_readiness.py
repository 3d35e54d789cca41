"""Readiness probes are built from the settings' addresses, not from host + local ports."""

from __future__ import annotations

from core.config import Settings
from gateway.readiness import GATEWAY_DEPENDENCIES, dependency_probes, service_probes, service_url


def test_probes_use_the_configured_urls() -> None:
    settings = Settings(
        host="127.0.0.1",
        kafka_bootstrap_servers="kafka-1:9092,kafka-2:9092",
        postgres_url="postgresql://flywheel:secret@db.internal:5432/flywheel",
        mongo_url="mongodb://mongo:27017/",
        mlflow_tracking_uri="http://mlflow:5000",
        triton_http_endpoint="triton:8000",
        service_urls={"indexer": "http://indexer:8090/", "gateway": "http://gateway:8080"},
    )
    urls = {probe.name: probe.url for probe in dependency_probes(settings)}
    assert urls == {
        "kafka": "kafka-1:9092,kafka-2:9092",
        "postgres": "postgresql://flywheel:secret@db.internal:5432/flywheel",
        "mongodb": "mongodb://mongo:27017/",
        "mlflow": "http://mlflow:5000",
        "triton": "http://triton:8000",
    }
    assert set(GATEWAY_DEPENDENCIES) <= set(urls)
    services = {probe.name: probe.url for probe in service_probes(settings)}
    assert services["indexer"] == "http://indexer:8090"
    assert services["gateway"] == "http://gateway:8080"
    # A service not named stays at its local port.
    assert services["sessions"] == f"http://127.0.0.1:{settings.services_base_port + 1}"


def test_local_defaults() -> None:
    settings = Settings(kafka_port=19092, postgres_port=15433, gateway_port=18080)
    urls = {probe.name: probe.url for probe in dependency_probes(settings)}
    assert urls["kafka"] == "127.0.0.1:19092"
    assert urls["postgres"].startswith("postgresql://postgres@127.0.0.1:15433/")
    assert service_url(settings, "gateway") == "http://127.0.0.1:18080"


def test_service_urls_travel_to_child_processes() -> None:
    settings = Settings(service_urls={"indexer": "http://indexer:8090"})
    env = settings.to_env()
    assert env["FLYWHEEL_SERVICE_URLS"] == '{"indexer": "http://indexer:8090"}'
