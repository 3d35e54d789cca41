"""Content: upsert one item or a batch, delete an item (everything goes through Kafka), and
read one item back as the index holds it (PostgreSQL)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, status
from pydantic import BaseModel, Field

from gateway.bodies import Accepted, ContentBatch, ContentItem, Deleted
from gateway.deps import PublisherDep, Publishing, Searching, SettingsDep, StoreDep
from gateway.problems import Problem, batch_too_large
from gateway.tenancy import TenantQuery, acting_tenant
from schemas.content import ContentUpserted
from schemas.topics import CONTENT_UPSERTED

router = APIRouter(prefix="/v1/content", tags=["content"])

# As ContentItem.id: an id an upsert would refuse names no item.
ItemId = Annotated[str, Path(min_length=1, max_length=512, description="The item's id, 1 to 512 characters.")]


class ItemIndex(BaseModel):
    version: str = Field(description="The model version.")
    status: str = Field(description="The version's status: building, active, retired or failed.")
    active: bool = Field(description="Whether search uses this version now.")
    chunks: int = Field(description="Chunks of the item in this version's table (0: not searchable there).")
    item_version: int | None = Field(description="The item version those chunks were embedded from.")


class ContentRecord(BaseModel):
    id: str
    version: int = Field(description="The item version stored (the highest one received).")
    title: str
    text: str
    metadata: dict[str, Any]
    indexed_at: datetime = Field(description="When this version of the item was written to the index.")
    searchable_in: list[str] = Field(
        description="Model versions whose index holds chunks of this version of the item.")
    indexes: list[ItemIndex] = Field(
        description="Every model version with an index, and what it holds of the item.")


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted)
async def upsert_content(
    body: ContentItem | ContentBatch, who: Publishing, publisher: PublisherDep, settings: SettingsDep
) -> Accepted:
    """Publish one item, or `{"items": [...]}`, as content-upserted events."""
    items = body.items if isinstance(body, ContentBatch) else [body]
    if len(items) > settings.gateway_max_batch:
        raise batch_too_large("items", len(items), settings.gateway_max_batch)
    events = [
        ContentUpserted(tenant=who.tenant, source="gateway", **item.model_dump(exclude_none=True))
        for item in items
    ]
    await publisher.publish_many(CONTENT_UPSERTED, events)
    return Accepted(event_ids=[str(e.event_id) for e in events], accepted=len(events))


# `:path`: an id may hold "/" (an upsert accepts it), so it must be addressable too.
@router.get("/{item_id:path}", response_model=ContentRecord)
async def get_content(item_id: ItemId, who: Searching, store: StoreDep, tenant: TenantQuery = None
                      ) -> ContentRecord:
    """The item as stored in the caller's tenant: version, title, text, metadata, when it was
    indexed, and by which model versions it is searchable (chunks of its current version in that
    version's table). Another tenant's item, a deleted one or one not indexed yet answers 404.
    An operator key reads another tenant's item with `?tenant=`."""
    tenant = acting_tenant(who, tenant, "items")
    record = await store.item_record(tenant, item_id)
    if record is None:
        raise Problem(404, f"no item {item_id!r} in tenant {tenant!r} (not indexed yet, or deleted)")
    indexes = [ItemIndex(**index) for index in record.pop("indexes")]
    searchable = [i.version for i in indexes if i.chunks and i.item_version == record["version"]]
    return ContentRecord(**record, searchable_in=searchable, indexes=indexes)


@router.delete("/{item_id:path}", status_code=status.HTTP_202_ACCEPTED, response_model=Deleted)
async def delete_content(item_id: ItemId, who: Publishing, publisher: PublisherDep) -> Deleted:
    """Publish a tombstone: the item and its vectors are deleted."""
    delivery = await publisher.delete_content(item_id, tenant=who.tenant)
    return Deleted(id=item_id, partition=delivery.partition, offset=delivery.offset)
