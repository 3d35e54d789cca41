"""``content-upserted``: a content item to index. A null Kafka value (tombstone) deletes it."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, JsonValue, model_validator

from schemas.envelope import DEFAULT_TENANT, INT64_MAX, Envelope


def content_key(tenant: str, item_id: str) -> str:
    """The Kafka key of an item: its id in the default tenant, else ``<tenant>/<id>``.

    Ids are unique per tenant, so the tenant is part of the key (compaction keeps one value
    per key). An id of the default tenant that contains '/' is written ``default/<id>``.
    """
    if tenant == DEFAULT_TENANT and "/" not in item_id:
        return item_id
    return f"{tenant}/{item_id}"


def parse_content_key(key: bytes | str | None) -> tuple[str, str]:
    """(tenant, id) from a content-upserted key; the inverse of :func:`content_key`."""
    if key is None:
        raise ValueError("a content-upserted record needs a key (the content id)")
    text = key.decode() if isinstance(key, bytes) else key
    tenant, sep, item_id = text.partition("/")
    if not sep:
        tenant, item_id = DEFAULT_TENANT, text
    if not tenant or not item_id:
        raise ValueError(f"bad content-upserted key {text!r}: expected <id> or <tenant>/<id>")
    return tenant, item_id


class ContentUpserted(Envelope):
    """Create or replace a content item. Key: ``id``."""

    type: Literal["content-upserted"] = "content-upserted"
    id: str = Field(min_length=1, max_length=512, description="Content id, unique within its tenant.")
    title: str = Field(default="", max_length=4096)
    text: str = Field(min_length=1, description="The text to embed and search.")
    metadata: dict[str, JsonValue] = Field(
        default_factory=dict, description="Free-form attributes; usable as search filters."
    )
    version: int = Field(
        ge=1, le=INT64_MAX, description="Item version; a consumer ignores an event older than what it stored."
    )
    vector: list[float] | None = Field(
        default=None, min_length=1, max_length=16384,
        description="A precomputed embedding to import instead of embedding the text.",
    )
    model_version: str | None = Field(
        default=None, min_length=1,
        description="The model version that produced `vector`; required with `vector`.",
    )

    @property
    def key(self) -> str:
        return content_key(self.tenant, self.id)

    @model_validator(mode="after")
    def _vector_needs_model_version(self) -> ContentUpserted:
        if self.vector is not None:
            if self.model_version is None:
                raise ValueError("model_version is required when vector is given")
            if not all(math.isfinite(x) for x in self.vector):
                raise ValueError("vector must contain only finite numbers")
        return self
