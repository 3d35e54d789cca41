"""The Helm chart, rendered by the real `helm` (built from its Go module by infra.helm) and
validated: every Kubernetes object against the API's own schemas (kubernetes-validate, strict:
an unknown field is an error), the KEDA ScaledObjects against KEDA's CRD schema (from KEDA's Go
module), and against the rest of the project: the settings compose gives, the commands compose
runs, the topic registry's partitions."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from consumers.service import SERVICES
from core.config import REPO_ROOT, Settings
from infra import helm
from infra.stack import SERVICE_TOPICS
from schemas.topics import TOPICS

pytestmark = pytest.mark.integration

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion), the default, the newest known.
KUBE_VERSIONS = ("1.27.0", helm.KUBE_VERSION, kubernetes_validate.latest_version())
Manifest = dict[str, Any]


@pytest.fixture(scope="module")
def manifests() -> list[Manifest]:
    return helm.render()


def by_kind(manifests: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())
    return data


def containers(manifest: Manifest) -> Iterator[Manifest]:
    spec = manifest["spec"]["template"]["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def strict(schema: Any) -> Any:
    """A CRD schema as the API server checks with field validation Strict: objects that list
    their properties take no others."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_object_is_valid_for_the_kubernetes_api(kube_version: str) -> None:
    rendered = helm.render(kube_version=kube_version)
    kinds = {m["kind"] for m in rendered}
    assert {"Deployment", "Service", "ConfigMap", "Secret", "HorizontalPodAutoscaler",
            "PersistentVolumeClaim", "Job", "ScaledObject"} <= kinds
    for manifest in rendered:
        if manifest["apiVersion"].startswith("keda.sh/"):
            continue
        kubernetes_validate.validate(manifest, kube_version, strict=True)


def test_helm_lint_passes() -> None:
    assert "0 chart(s) failed" in helm.lint()


def test_the_validation_is_strict(manifests: list[Manifest]) -> None:
    """So the test above would catch a misspelled field or a wrong type."""
    deployment = copy.deepcopy(by_kind(manifests, "Deployment")["flywheel-indexer"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, helm.KUBE_VERSION, strict=True)
    hpa = copy.deepcopy(by_kind(manifests, "HorizontalPodAutoscaler")["flywheel-gateway"])
    hpa["spec"]["maxReplicas"] = "ten"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(hpa, helm.KUBE_VERSION, strict=True)


def test_scaled_objects_match_kedas_crd_and_stop_at_one_replica_per_partition(
    manifests: list[Manifest],
) -> None:
    crd = yaml.safe_load((helm.ensure_keda_crds() / "keda.sh_scaledobjects.yaml").read_text())
    scaled = by_kind(manifests, "ScaledObject")
    assert set(scaled) == {"flywheel-indexer", "flywheel-sessions"}
    deployments = by_kind(manifests, "Deployment")
    groups = {"indexer": Settings().indexer_group, "sessions": "sessions"}
    for name, manifest in scaled.items():
        group, version = manifest["apiVersion"].split("/")
        assert group == crd["spec"]["group"] and manifest["kind"] == crd["spec"]["names"]["kind"]
        [served] = [v for v in crd["spec"]["versions"] if v["name"] == version]
        schema = strict(served["schema"]["openAPIV3Schema"])
        jsonschema.validate(manifest, schema)
        with pytest.raises(jsonschema.ValidationError):  # the schema does check
            jsonschema.validate({**manifest, "spec": {**manifest["spec"], "maxReplicaCount": "6"}}, schema)

        service = name.removeprefix("flywheel-")
        spec = manifest["spec"]
        target = spec["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in deployments
        # KEDA owns the replica count of what it scales.
        assert "replicas" not in deployments[target["name"]]["spec"]
        [trigger] = spec["triggers"]
        meta = trigger["metadata"]
        assert trigger["type"] == "kafka"
        topic = TOPICS[meta["topic"]]
        assert topic is SERVICE_TOPICS[service]
        assert meta["consumerGroup"] == groups[service]
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= topic.partitions
        assert meta["allowIdleConsumers"] == "false"
        assert int(meta["lagThreshold"]) > 0


def test_the_chart_refuses_more_replicas_than_partitions() -> None:
    with pytest.raises(RuntimeError, match="exceeds the 6 partitions of content-upserted"):
        helm.render("--set", "services.indexer.autoscaling.maxReplicas=7")
    # The chart's partitions are the registry's.
    values = yaml.safe_load((helm.CHART_DIR / "values.yaml").read_text())
    for topic in values["topics"].values():
        assert topic["partitions"] == TOPICS[topic["name"]].partitions


def test_settings_are_those_compose_gives(manifests: list[Manifest]) -> None:
    compose_env = compose()["x-flywheel-env"]
    [config] = by_kind(manifests, "ConfigMap").values()
    [secret] = by_kind(manifests, "Secret").values()
    assert set(config["data"]) | set(secret["data"]) == set(compose_env)
    assert {"FLYWHEEL_POSTGRES_URL", "FLYWHEEL_MONGO_URL"} <= set(secret["data"])
    # A model name of its own is passed on to the services as well as to Triton.
    renamed = helm.render("--set", "triton.modelName=search")
    [renamed_config] = by_kind(renamed, "ConfigMap").values()
    assert renamed_config["data"]["FLYWHEEL_TRITON_MODEL_NAME"] == "search"
    triton = by_kind(renamed, "Deployment")["flywheel-triton"]["spec"]["template"]["spec"]["containers"][0]
    assert {"--load-model=search_v1", "--load-model=search_v1_query",
            "--disable-auto-complete-config"} <= set(triton["command"])
    assert not set(config["data"]) & set(secret["data"])
    # Each service's health URL names the Service in front of it.
    urls = yaml.safe_load(config["data"]["FLYWHEEL_SERVICE_URLS"])
    services = by_kind(manifests, "Service")
    assert set(urls) == {*SERVICES, "gateway"}
    for name, url in urls.items():
        host, port = url.removeprefix("http://").split(":")
        assert host == f"flywheel-{name}"
        assert int(port) in {p["port"] for p in services[host]["spec"]["ports"]}
    # Every pod reads them.
    for workload in [*by_kind(manifests, "Deployment").values(), *by_kind(manifests, "Job").values()]:
        for container in containers(workload):
            if container["name"] == "triton":
                continue
            refs = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
            expected = {config["metadata"]["name"], secret["metadata"]["name"]}
            assert refs == expected, workload["metadata"]["name"]


def test_workloads_run_what_compose_runs(manifests: list[Manifest]) -> None:
    services = compose()["services"]
    deployments = by_kind(manifests, "Deployment")
    assert set(deployments) == {f"flywheel-{name}" for name in [*SERVICES, "gateway", "triton"]}
    for name in [*SERVICES, "gateway"]:
        [container] = deployments[f"flywheel-{name}"]["spec"]["template"]["spec"]["containers"]
        assert container["command"] == services[name]["command"], name
        # Probed where compose's healthcheck probes.
        path = "/healthz" if name == "gateway" else "/health"
        assert container["livenessProbe"]["httpGet"]["path"] == path
        assert path in " ".join(services[name]["healthcheck"]["test"])
    [job] = by_kind(manifests, "Job").values()
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == services["kafka-init"]["command"]


def test_triton_gets_gpus_a_readiness_probe_and_its_model_repository(manifests: list[Manifest]) -> None:
    triton = by_kind(manifests, "Deployment")["flywheel-triton"]
    pod = triton["spec"]["template"]["spec"]
    [init] = pod["initContainers"]
    assert init["command"] == compose()["services"]["triton-models"]["command"]
    [server] = pod["containers"]
    assert server["resources"]["limits"]["nvidia.com/gpu"] >= 1
    assert server["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert "--model-repository=/models" in server["command"]
    claim = {v["name"]: v for v in pod["volumes"]}["models"]["persistentVolumeClaim"]["claimName"]
    assert claim in by_kind(manifests, "PersistentVolumeClaim")
    # The deployer writes new versions into the same repository.
    deployer = by_kind(manifests, "Deployment")["flywheel-deployer"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in deployer["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == claim
    env = {e["name"]: e["value"] for e in deployer["containers"][0]["env"]}
    assert env["FLYWHEEL_TRITON_REPOSITORY_DIR"] == "/models"


def test_the_trainer_asks_for_a_gpu_unless_told_not_to(manifests: list[Manifest]) -> None:
    def trainer_limits(rendered: list[Manifest]) -> dict[str, Any]:
        pod = by_kind(rendered, "Deployment")["flywheel-trainer"]["spec"]["template"]["spec"]
        limits: dict[str, Any] = pod["containers"][0]["resources"]["limits"]
        return limits

    assert trainer_limits(manifests)["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in trainer_limits(helm.render("--set", "services.trainer.gpus=0"))


def test_the_gateway_scales_on_cpu(manifests: list[Manifest]) -> None:
    [hpa] = by_kind(manifests, "HorizontalPodAutoscaler").values()
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "flywheel-gateway"}
    assert hpa["spec"]["scaleTargetRef"] == target
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    gateway = by_kind(manifests, "Deployment")["flywheel-gateway"]
    assert "replicas" not in gateway["spec"]
    assert gateway["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]


def test_every_service_selects_its_pods(manifests: list[Manifest]) -> None:
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in by_kind(manifests, "Deployment").values()]
    for name, service in by_kind(manifests, "Service").items():
        selector = service["spec"]["selector"]
        matching = [labels for labels in pods if selector.items() <= labels.items()]
        assert len(matching) == 1, name
    for deployment in by_kind(manifests, "Deployment").values():
        spec = deployment["spec"]
        assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()


def test_an_existing_secret_replaces_the_charts(manifests: list[Manifest]) -> None:
    rendered = helm.render("--set", "secrets.existingSecret=flywheel-prod")
    assert not by_kind(rendered, "Secret")
    indexer = by_kind(rendered, "Deployment")["flywheel-indexer"]
    [container] = indexer["spec"]["template"]["spec"]["containers"]
    refs = [ref for ref in container["envFrom"] if "secretRef" in ref]
    assert refs == [{"secretRef": {"name": "flywheel-prod"}}]
