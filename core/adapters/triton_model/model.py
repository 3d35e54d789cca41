"""Triton Python-backend model: sentence-transformers embeddings, L2-normalised float32.

Copied into `<repository>/<model>/<version>/model.py`; the weights sit beside it in `model/`.
Runs inside triton_python_backend_stub: locally in the environment infra.triton_dist.write_stub_env
makes (the platform's venv, with NumPy 1 first), under compose in the image of infra/Dockerfile.triton.
On a GPU when Triton placed the instance there (kind GPU, or MODEL when torch sees one).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

# Weights are always local; never reach for a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from sentence_transformers import SentenceTransformer

MODEL_SUBDIR = "model"


def intra_op_threads(config: dict[str, Any], device: str) -> int:
    """The config's `intra_op_threads` parameter, or (0) the cores this process may run on
    divided among the instance group's instances, so together they never oversubscribe."""
    value = config.get("parameters", {}).get("intra_op_threads", {}).get("string_value", "0")
    if int(value or 0) > 0:
        return int(value)
    if device != "cpu":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    instances = sum(int(group.get("count", 1)) for group in config.get("instance_group", [])) or 1
    return max(1, cores // instances)


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        kind = args.get("model_instance_kind", "CPU")
        if torch.cuda.is_available() and kind in ("GPU", "MODEL"):
            device = f"cuda:{args.get('model_instance_device_id', '0')}" if kind == "GPU" else "cuda"
        else:
            device = "cpu"
        config = json.loads(args["model_config"])
        threads = intra_op_threads(config, device)
        torch.set_num_threads(threads)
        with contextlib.suppress(RuntimeError):  # already set in this process
            torch.set_num_interop_threads(1)
        model_dir = Path(__file__).resolve().parent / MODEL_SUBDIR
        self.model = SentenceTransformer(str(model_dir), device=device, local_files_only=True)
        self.model.eval()
        self.batch_size = int(config.get("max_batch_size") or 64)
        pb_utils.Logger.log_info(
            f"loaded {model_dir} on {device} ({threads} intra-op threads), "
            f"dim={self.model.get_sentence_embedding_dimension()}, "
            f"torch {torch.__version__}, numpy {np.__version__}, python prefix {sys.prefix}"
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        # One forward pass over every text of every request the dynamic batcher handed us.
        texts: list[str] = []
        counts: list[int] = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            decoded = [t.decode("utf-8", errors="replace") if isinstance(t, bytes) else str(t) for t in raw]
            texts.extend(decoded)
            counts.append(len(decoded))
        try:
            with torch.inference_mode():
                vectors = self.model.encode(
                    texts,
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        except Exception as exc:  # one bad batch must not kill the stub
            error = pb_utils.TritonError(f"embedding failed: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        responses = []
        start = 0
        for count in counts:
            out = pb_utils.Tensor("EMBEDDING", vectors[start : start + count])
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            start += count
        return responses

    def finalize(self) -> None:
        del self.model
