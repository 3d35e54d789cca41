"""``reindex-requested``: re-embed the corpus with a model version. Key: ``model_version``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.envelope import INT64_MAX, Envelope


class ReindexRequested(Envelope):
    """Build the index of a model version by replaying content-upserted."""

    type: Literal["reindex-requested"] = "reindex-requested"
    model_version: str = Field(min_length=1, max_length=256, description="Target model version.")
    source_topic: Literal["content-upserted"] = Field(
        default="content-upserted", description="Topic replayed to rebuild the index."
    )
    from_offset: int = Field(default=0, ge=0, le=INT64_MAX,
                             description="Replay from this offset on every partition.")
    activate: bool = Field(default=True, description="Switch search to the new index once complete.")
    fusion_weight: float | None = Field(
        default=None, ge=0.0, le=1.0, description="The version's hybrid fusion weight (from "
        "model-published), recorded with the version unless it has one; null: leave it as it is.")
