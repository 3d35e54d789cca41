"""``clicks``: what users of a search session did. Key: ``session_id``.

Three event types share the topic, told apart by ``type``: ``search`` (the query and the
results shown), ``click`` and ``conversion``.
"""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from schemas.envelope import INT64_MAX, Envelope

SessionId = Annotated[str, Field(min_length=1, max_length=256, description="The search session.")]


class ShownResult(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    id: str = Field(min_length=1, max_length=512, description="Content id shown.")
    rank: int = Field(ge=1, le=INT64_MAX, description="1-based position on the result list.")
    score: float = Field(description="The similarity score the search returned.")


class SearchEvent(Envelope):
    """A search ran and showed these results."""

    type: Literal["search"] = "search"
    session_id: SessionId
    query: str = Field(min_length=1, max_length=4096)
    results: list[ShownResult] = Field(max_length=200, description="Results shown, best first (at most 200).")
    model_version: str = Field(min_length=1, description="Model version that embedded the query.")


class ClickEvent(Envelope):
    """The user opened a result."""

    type: Literal["click"] = "click"
    session_id: SessionId
    content_id: str = Field(min_length=1, max_length=512)
    rank: int = Field(ge=1, le=INT64_MAX, description="1-based position of the clicked result.")
    search_event_id: UUID | None = Field(
        default=None, description="The search that showed the result; default: the session's latest."
    )


class ConversionEvent(Envelope):
    """The user acted on a result (bought, saved, answered...)."""

    type: Literal["conversion"] = "conversion"
    session_id: SessionId
    content_id: str = Field(min_length=1, max_length=512)
    value: float | None = Field(default=None, description="Optional business value of the conversion.")
    search_event_id: UUID | None = None


SessionEvent = Annotated[SearchEvent | ClickEvent | ConversionEvent, Field(discriminator="type")]
