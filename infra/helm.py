"""The Helm chart (infra/helm/embedding-flywheel) and the tools that render and check it.

`helm` is built from its Go module (helm.sh/helm/v3, from the Go module proxy) into the shared
tools directory, once; KEDA's CustomResourceDefinitions come from KEDA's Go module the same
way, so a ScaledObject can be checked against KEDA's own schema without a cluster.

    python -m infra.helm                      build helm (if needed) and print its path
    python -m infra.helm template [ARGS...]   helm template flywheel <chart> ARGS...
    python -m infra.helm keda-crds            fetch KEDA's CRDs (if needed) and print their folder
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from core.config import REPO_ROOT, get_settings
from infra.process import require_program

CHART_DIR = REPO_ROOT / "infra" / "helm" / "embedding-flywheel"
HELM_MODULE = "helm.sh/helm/v3"
HELM_VERSION = "v3.20.2"
KEDA_MODULE = "github.com/kedacore/keda/v2"
KEDA_VERSION = "v2.21.0"
KEDA_CRDS = ("keda.sh_scaledobjects.yaml",)
# The Kubernetes version the chart is rendered for unless told (helm built with `go install`
# would otherwise assume v1.20, older than the chart's kubeVersion).
KUBE_VERSION = "1.33.0"
GO_HINT = "Go 1.24 or newer, https://go.dev/doc/install"


def helm_path(tools_dir: Path) -> Path:
    return tools_dir / f"helm-{HELM_VERSION}" / "helm"


def _locked(tools_dir: Path, name: str) -> Any:
    tools_dir.mkdir(parents=True, exist_ok=True)
    lock = open(tools_dir / f".{name}.lock", "w")  # noqa: SIM115 - held until the caller closes it
    fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def ensure_helm(tools_dir: Path | None = None) -> Path:
    """The helm binary, built with `go install` from the module proxy the first time (cached in
    the tools directory; two builds at once wait for each other)."""
    tools_dir = tools_dir or get_settings().tools_dir
    target = helm_path(tools_dir)
    if target.exists():
        return target
    go = require_program("go", GO_HINT)
    with _locked(tools_dir, "helm"):
        if target.exists():
            return target
        with tempfile.TemporaryDirectory(prefix="helm-build-", dir=tools_dir) as scratch:
            env = {**os.environ, "GOBIN": scratch, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
            build = subprocess.run(
                [go, "install", f"-ldflags=-s -w -X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
                 f"{HELM_MODULE}/cmd/helm@{HELM_VERSION}"],
                env=env, capture_output=True, text=True,
            )
            if build.returncode != 0:
                raise RuntimeError(f"building helm {HELM_VERSION} failed:\n{build.stderr[-3000:]}")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(Path(scratch) / "helm", target)
    return target


def ensure_keda_crds(tools_dir: Path | None = None) -> Path:
    """A folder with KEDA's CRDs (KEDA_CRDS) of KEDA_VERSION, from its Go module."""
    tools_dir = tools_dir or get_settings().tools_dir
    folder = tools_dir / f"keda-crds-{KEDA_VERSION}"
    if all((folder / name).exists() for name in KEDA_CRDS):
        return folder
    go = require_program("go", GO_HINT)
    with _locked(tools_dir, "keda-crds"):
        download = subprocess.run(
            [go, "mod", "download", "-json", f"{KEDA_MODULE}@{KEDA_VERSION}"],
            env={**os.environ, "GOFLAGS": "-mod=mod"}, capture_output=True, text=True,
        )
        if download.returncode != 0:
            raise RuntimeError(f"go mod download of KEDA failed:\n{download.stdout}{download.stderr}")
        module_dir = Path(json.loads(download.stdout)["Dir"])
        folder.mkdir(parents=True, exist_ok=True)
        for name in KEDA_CRDS:
            shutil.copyfile(module_dir / "config" / "crd" / "bases" / name, folder / name)
    return folder


def render(
    *args: str, release: str = "flywheel", values: dict[str, Any] | None = None, chart: Path = CHART_DIR,
    kube_version: str = KUBE_VERSION,
) -> list[dict[str, Any]]:
    """`helm template` of the chart: the manifests, parsed. `values` are given as a values file;
    `args` go to helm as they are (e.g. "--set", "gateway.replicas=3"). A failed render
    (the chart's own `fail` checks included) raises RuntimeError with helm's message."""
    helm = ensure_helm()
    with tempfile.TemporaryDirectory(prefix="helm-values-") as scratch:
        extra: list[str] = []
        if values is not None:
            values_file = Path(scratch) / "values.yaml"
            values_file.write_text(yaml.safe_dump(values))
            extra = ["--values", str(values_file)]
        done = subprocess.run(
            [str(helm), "template", release, str(chart), "--kube-version", kube_version, *extra, *args],
            capture_output=True, text=True,
            # helm keeps no state of ours: caches and config in the scratch folder.
            env={**os.environ, "HELM_CACHE_HOME": scratch, "HELM_CONFIG_HOME": scratch,
                 "HELM_DATA_HOME": scratch},
        )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip())
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def lint(chart: Path = CHART_DIR, kube_version: str = KUBE_VERSION) -> str:
    """`helm lint --strict` of the chart: its output; RuntimeError when helm finds a problem."""
    done = subprocess.run(
        [str(ensure_helm()), "lint", "--strict", "--kube-version", kube_version, str(chart)],
        capture_output=True, text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stdout + done.stderr)
    return done.stdout


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(ensure_helm())
        return 0
    if argv[0] == "keda-crds":
        print(ensure_keda_crds())
        return 0
    if argv[0] == "template":
        helm = ensure_helm()
        kube = [] if "--kube-version" in argv else ["--kube-version", KUBE_VERSION]
        return subprocess.call([str(helm), "template", "flywheel", str(CHART_DIR), *kube, *argv[1:]])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
