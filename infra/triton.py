"""Local NVIDIA Triton Inference Server serving the embedder through the Python backend."""

from __future__ import annotations

from pathlib import Path

from core.adapters.triton_repository import BASE_VERSION, build_model_repository, lane_models
from core.base_model import base_model_dir
from core.config import Settings
from gateway.readiness import triton_health
from infra.process import Component, Health
from infra.triton_dist import install_triton, server_environment, triton_dist, write_stub_env


def local_instance_kind() -> str:
    """The local Triton runs on this machine: its instances go where torch sees a GPU."""
    import torch

    return "KIND_GPU" if torch.cuda.is_available() else "KIND_CPU"


class Triton(Component):
    """`write_repository=False` serves a repository someone else wrote (as compose's
    `triton-models` job does) without touching it."""

    name = "triton"

    def __init__(self, settings: Settings, write_repository: bool = True) -> None:
        super().__init__(settings)
        self.write_repository = write_repository

    @property
    def url(self) -> str:
        return f"http://{self.settings.triton_http_url}"

    @property
    def model_repository(self) -> Path:
        return self.settings.triton_repository

    @property
    def stub_env(self) -> Path:
        return self.settings.state_dir / "triton-stub-env"

    @property
    def shm_prefix(self) -> str:
        # Per stack, so a test stack and a dev stack never share regions.
        return f"flywheel{self.settings.triton_grpc_port}_"

    def prepare(self) -> None:
        write_stub_env(self.stub_env, install_triton(self.settings.tools_dir))
        # Regions a killed server left behind (the server is not running when prepare runs).
        for stale in Path("/dev/shm").glob(f"{self.shm_prefix}*"):
            stale.unlink(missing_ok=True)
        s = self.settings
        if not self.write_repository:
            return
        # The configs are rewritten on every start, so batching, lanes and instances follow the
        # settings; an older layout is moved over and the base version placed when missing.
        build_model_repository(
            self.model_repository, base_model_dir(s), s.triton_model_name, BASE_VERSION,
            s.triton_max_batch_size, s.triton_preferred_batch_sizes, instance_kind=local_instance_kind(),
            instance_count=s.triton_instance_count, intra_op_threads=s.triton_intra_op_threads,
            precision=s.triton_precision, min_cosine=s.deploy_min_cosine, bulk_nice=s.triton_bulk_nice,
        )

    def command(self) -> list[str]:
        s = self.settings
        dist = triton_dist(s.tools_dir)
        return [
            str(dist.binary),
            f"--model-repository={self.model_repository}",
            "--model-control-mode=explicit",
            # The base version in both lanes, as compose and helm start it: the deployer's
            # residency round loads the other versions in the repository while this one serves.
            *(f"--load-model={name}" for name in lane_models(s.triton_model_name, [BASE_VERSION])),
            # The configs are complete; auto-completing them would start a second Python stub
            # per model just to read them, doubling each load.
            "--disable-auto-complete-config",
            f"--backend-directory={dist.backends_dir}",
            f"--cache-directory={dist.caches_dir}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            f"--http-address={s.host}",
            f"--http-port={s.triton_http_port}",
            f"--grpc-address={s.host}",
            f"--grpc-port={s.triton_grpc_port}",
            f"--metrics-address={s.host}",
            f"--metrics-port={s.triton_metrics_port}",
            "--exit-timeout-secs=10",
            "--strict-readiness=false",
            "--log-verbose=0",
        ]

    def environment(self) -> dict[str, str]:
        return {
            **server_environment(triton_dist(self.settings.tools_dir), self.stub_env),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }

    def check(self) -> Health:
        return triton_health(self.settings.triton_http_url, self.settings.triton_model_name)
