"""The registered model's files: download from MLflow, and embed with them in-process."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class BrokenArtifact(ValueError):
    """The artifact is not a sentence-transformers model directory."""


def find_model_dir(root: Path) -> Path:
    """The sentence-transformers directory (the one holding modules.json) at or under `root`."""
    if (root / "modules.json").is_file():
        return root
    found = sorted(root.rglob("modules.json"), key=lambda p: (len(p.parts), str(p)))
    if not found:
        raise BrokenArtifact(f"no sentence-transformers model (modules.json) in the artifact at {root}")
    return found[0].parent


def download_model(artifact_uri: str, dest: Path, tracking_uri: str) -> Path:
    """Download `artifact_uri` (runs:/, models:/, mlflow-artifacts:/ ...) into `dest`; blocking."""
    import mlflow.artifacts

    dest.mkdir(parents=True, exist_ok=True)
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=artifact_uri, dst_path=str(dest), tracking_uri=tracking_uri
    )
    return find_model_dir(Path(local))


def reference_embeddings(model_dir: Path, texts: list[str]) -> np.ndarray:
    """L2-normalised embeddings by the model loaded in this process from local files; blocking."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local files only: never a model hub
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    vectors = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    return np.asarray(vectors, dtype=np.float32)
