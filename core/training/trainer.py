"""The real `ModelTrainer` (core.ports): trains a candidate by the run's recipe, fine-tune
(core.training.finetune) or linear-map (core.training.linear_map), and evaluates models with
sentence-transformers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from core.fusion import DEFAULT_FUSION_CHOICE, FusionChoice
from core.training.dataset import TrainingDataset
from core.training.evaluation import evaluate
from core.training.finetune import FineTuneConfig, fine_tune
from core.training.linear_map import LinearMapConfig, train_linear_map
from core.training.runtime import Progress, TrainingResult, load_model


def evaluate_model(model_dir: Path, data: TrainingDataset, batch_size: int = 64,
                   fusion: FusionChoice = DEFAULT_FUSION_CHOICE) -> dict[str, float]:
    model = load_model(model_dir)

    def encode(texts: list[str]) -> Any:
        return model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                            convert_to_numpy=True, show_progress_bar=False)

    return evaluate(encode, data.eval_queries, data.pools, fusion)


class SentenceTransformersTrainer:
    """The real `ModelTrainer`: fine-tunes and evaluates with sentence-transformers."""

    def __init__(self, fusion: FusionChoice = DEFAULT_FUSION_CHOICE,
                 linear_map: LinearMapConfig | None = None) -> None:
        self.fusion = fusion
        self.linear_map = linear_map or LinearMapConfig()

    def fine_tune(self, base_dir: Path, out_dir: Path, data: TrainingDataset, config: FineTuneConfig,
                  progress: Progress | None = None) -> TrainingResult:
        if config.recipe == "linear-map":
            recipe = replace(self.linear_map, seed=config.seed, epochs=config.epochs)
            return train_linear_map(base_dir, out_dir, data, recipe, progress)
        return fine_tune(base_dir, out_dir, data, config, progress)

    def evaluate(self, model_dir: Path, data: TrainingDataset) -> dict[str, float]:
        return evaluate_model(model_dir, data, fusion=self.fusion)
