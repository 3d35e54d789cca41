"""Content: upsert one item or a batch, delete an item. Everything goes through Kafka."""

from __future__ import annotations

from fastapi import APIRouter, status

from gateway.bodies import Accepted, ContentBatch, ContentItem, Deleted
from gateway.deps import PublisherDep, Publishing, SettingsDep
from gateway.problems import Problem
from schemas.content import ContentUpserted
from schemas.topics import CONTENT_UPSERTED

router = APIRouter(prefix="/v1/content", tags=["content"])


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted)
async def upsert_content(
    body: ContentItem | ContentBatch, who: Publishing, publisher: PublisherDep, settings: SettingsDep
) -> Accepted:
    """Publish one item, or `{"items": [...]}`, as content-upserted events."""
    items = body.items if isinstance(body, ContentBatch) else [body]
    if len(items) > settings.gateway_max_batch:
        raise Problem(413, f"items: at most {settings.gateway_max_batch} items per request",
                      errors=[{"field": "items", "reason": f"more than {settings.gateway_max_batch}"}])
    events = [
        ContentUpserted(tenant=who.tenant, source="gateway", **item.model_dump(exclude_none=True))
        for item in items
    ]
    await publisher.publish_many(CONTENT_UPSERTED, events)
    return Accepted(event_ids=[str(e.event_id) for e in events], accepted=len(events))


@router.delete("/{item_id}", status_code=status.HTTP_202_ACCEPTED, response_model=Deleted)
async def delete_content(item_id: str, who: Publishing, publisher: PublisherDep) -> Deleted:
    """Publish a tombstone: the item and its vectors are deleted."""
    delivery = await publisher.delete_content(item_id, tenant=who.tenant)
    return Deleted(id=item_id, partition=delivery.partition, offset=delivery.offset)
