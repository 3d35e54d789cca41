"""``training-requested``: fine-tune the embedding model on gathered sessions. Key: ``run_id``."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field, model_validator

from schemas.envelope import INT64_MAX, Envelope


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
    epochs: int = Field(default=1, ge=1, le=100)
    gate_margin: float = Field(
        default=0.0, ge=0.0, le=1.0,
        description="Publish only if the candidate beats the base by this much on held-out sessions.",
    )

    @model_validator(mode="after")
    def _window_in_order(self) -> TrainingRequested:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError("since must be before until")
        return self
