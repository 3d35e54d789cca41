"""``model-published``: a trained model version passed the gate. Key: ``model_version``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.envelope import Envelope


class ModelPublished(Envelope):
    """A candidate passed the gate and is registered; the deployer rolls it out."""

    type: Literal["model-published"] = "model-published"
    model_version: str = Field(min_length=1, max_length=256)
    registry_version: int = Field(ge=1, description="Version number in the model registry (MLflow).")
    metrics: dict[str, float] = Field(default_factory=dict, description="Gate metrics, e.g. ndcg_at_10.")
    artifact_uri: str = Field(min_length=1, description="Where the model files are.")
    run_id: str = Field(min_length=1, description="The training run that produced it.")
    base_version: str | None = Field(default=None, description="The version it was fine-tuned from.")
    fusion_weight: float | None = Field(
        default=None, ge=0.0, le=1.0, description="The vector ranking's share of the version's hybrid "
        "scores, chosen by the training run on held-out queries; null: the default 0.5.")
