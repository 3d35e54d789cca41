"""``training-requested``: fine-tune the embedding model on gathered sessions. Key: ``run_id``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, Field, model_validator

from schemas.envelope import INT64_MAX, Envelope

# The name of an uploaded dataset (POST /v1/datasets), matched whole.
DatasetName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]

# How a run trains (core.training): "fine-tune" trains the transformer; "linear-map" trains a
# linear map after it, contrasted against the tenant's corpus.
Recipe = Literal["fine-tune", "linear-map"]

# A request's recipe and epochs, both optional: the trainer fills in its own (core.config).
RecipeChoice = Annotated[Recipe | None, Field(
    description="fine-tune (the transformer) or linear-map (a map after it); default: the trainer's "
                "FLYWHEEL_TRAINING_RECIPE.")]
EpochsChoice = Annotated[int | None, Field(
    ge=1, le=100, description="Passes over the training pairs; default: the recipe's (1 for fine-tune, "
                              "FLYWHEEL_TRAINING_MAP_EPOCHS for linear-map).")]

# The request's fields a training task records, and a retry sends again.
REQUEST_FIELDS = ("base_version", "since", "until", "min_sessions", "recipe", "epochs", "gate_margin",
                  "use_sessions", "datasets", "eval_dataset")


class TrainingRequested(Envelope):
    """Fine-tune a candidate from the base version on sessions of the data window."""

    type: Literal["training-requested"] = "training-requested"
    run_id: str = Field(min_length=1, max_length=256, description="Idempotency key of the run.")
    base_version: str | None = Field(
        default=None, description="Model version to start from; default: the active version."
    )
    since: AwareDatetime | None = Field(default=None, description="Use sessions from this time.")
    until: AwareDatetime | None = Field(default=None, description="Use sessions before this time.")
    min_sessions: int = Field(default=100, ge=1, le=INT64_MAX,
                              description="Do not train with fewer sessions.")
    recipe: RecipeChoice = None
    epochs: EpochsChoice = None
    gate_margin: float = Field(
        default=0.0, ge=0.0, le=1.0,
        description="Publish only if the candidate beats the base by this much on held-out sessions.",
    )

    use_sessions: bool = Field(default=True, description="Learn from the tenant's click sessions.")
    datasets: list[DatasetName] = Field(
        default_factory=list, max_length=20,
        description="The tenant's uploaded judgment datasets to learn from (graded > 0: positives; "
                    "0: negatives of the query).")
    eval_dataset: DatasetName | None = Field(
        default=None, description="An uploaded dataset held out for the gate's evaluation, instead of "
                                  "held-out sessions (every session then trains).")

    @model_validator(mode="after")
    def _window_in_order(self) -> TrainingRequested:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError("since must be before until")
        check_sources(self.use_sessions, self.datasets, self.eval_dataset)
        return self

    def request_details(self) -> dict[str, Any]:
        """The request as its task records it (JSON), to be shown and sent again by a retry."""
        return self.model_dump(mode="json", include=set(REQUEST_FIELDS))


def check_sources(use_sessions: bool, datasets: list[str], eval_dataset: str | None) -> None:
    """What a run learns from: sessions, datasets or both, never the set it is judged on."""
    if not use_sessions and not datasets:
        raise ValueError("datasets: name at least one dataset when use_sessions is false")
    if eval_dataset is not None and eval_dataset in datasets:
        raise ValueError("eval_dataset: a held-out dataset cannot also be trained on; "
                         "remove it from datasets")
