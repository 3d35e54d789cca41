"""What every training recipe shares: the device, the seed, loading a sentence-transformers
model from a directory (never from a hub), progress reports and the result of a run."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

# Called with (work done, work in all), e.g. after each optimiser step.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class TrainingResult:
    steps: int
    seconds: float
    device: str
    mean_loss: float
    last_loss: float


def select_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def load_model(model_dir: Path, device: str | None = None) -> SentenceTransformer:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device=device or select_device(), local_files_only=True)
