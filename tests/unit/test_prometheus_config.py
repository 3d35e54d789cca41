"""Prometheus's scrape configurations (local and compose) and the Grafana provisioning agree
with the services and with each other; every dashboard query names only defined variables."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from consumers.service import SERVICES
from core.config import REPO_ROOT, Settings
from infra.prometheus import scrape_config, service_targets

GRAFANA = REPO_ROOT / "infra" / "grafana"
COMPOSE = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())
COMPOSE_PROMETHEUS = yaml.safe_load((REPO_ROOT / "infra" / "prometheus" / "prometheus.yml").read_text())
# Grafana's own variables (https://grafana.com/docs/grafana/latest/dashboards/variables/add-template-variables/).
BUILTIN = {"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s"}


def dashboards() -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted((GRAFANA / "dashboards").glob("*.json"))]


def queries(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_compose_scrapes_every_service_the_gateway_and_triton_at_their_ports() -> None:
    jobs = {job["job_name"]: job for job in COMPOSE_PROMETHEUS["scrape_configs"]}
    scraped = {group["labels"]["service"]: group["targets"]
               for group in jobs["flywheel"]["static_configs"]}
    for name in [*SERVICES, "gateway"]:
        command = COMPOSE["services"][name]["command"]
        port = command[command.index("--port") + 1]
        assert scraped[name] == [f"{name}:{port}"], name
    metrics_port = re.search(r"--metrics-port=(\d+)", COMPOSE["services"]["triton"]["command"])
    assert metrics_port is not None
    assert jobs["triton"]["static_configs"][0]["targets"] == [f"triton:{metrics_port[1]}"]
    mounted = COMPOSE["services"]["prometheus"]["volumes"][0].split(":")[0]
    assert (REPO_ROOT / mounted).resolve() == REPO_ROOT / "infra" / "prometheus" / "prometheus.yml"


def test_the_local_configuration_has_the_same_jobs_and_labels_at_the_settings_ports(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, services_base_port=40010, gateway_port=40008,
                        triton_metrics_port=40007, prometheus_port=40019, prometheus_scrape_interval_s=2)
    config = scrape_config(settings, tmp_path / "targets.json")
    assert [job["job_name"] for job in config["scrape_configs"]] == [
        job["job_name"] for job in COMPOSE_PROMETHEUS["scrape_configs"]]
    assert config["global"]["scrape_interval"] == "2s"
    assert config["scrape_configs"][1]["static_configs"][0]["targets"] == ["127.0.0.1:40007"]
    targets = {group["labels"]["service"]: group["targets"] for group in service_targets(settings)}
    assert targets["gateway"] == ["127.0.0.1:40008"]
    assert targets["indexer"] == ["127.0.0.1:40010"]
    assert set(targets) == {*SERVICES, "gateway"}


def test_grafana_provisions_the_dashboards_against_the_prometheus_data_source() -> None:
    source = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = source["datasources"][0]["uid"]
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    volumes = COMPOSE["services"]["grafana"]["volumes"]
    assert "./infra/grafana/dashboards:/var/lib/grafana/dashboards:ro" in volumes
    assert {d["uid"] for d in dashboards()} == {"flywheel-pipeline", "flywheel-search"}
    for dashboard in dashboards():
        for panel in dashboard["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == uid and panel["targets"], panel["title"]


def test_every_variable_a_query_uses_is_defined() -> None:
    for dashboard in dashboards():
        defined = {v["name"] for v in dashboard["templating"]["list"]} | BUILTIN
        for expr in queries(dashboard):
            used = set(re.findall(r"\$(\w+)", expr))
            assert used <= defined, (dashboard["uid"], expr)
