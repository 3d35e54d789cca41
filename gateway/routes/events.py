"""Publish any registered event, validated against its schema, for systems without Kafka."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, status

from gateway.bodies import Published
from gateway.deps import PublisherDep, Publishing
from gateway.problems import Problem
from schemas import codec
from schemas.topics import TOPICS

router = APIRouter(prefix="/v1/events", tags=["events"])


@router.post("/{topic}", status_code=status.HTTP_202_ACCEPTED, response_model=Published)
async def publish_event(
    topic: str, who: Publishing, publisher: PublisherDep, event: Annotated[dict[str, Any], Body()]
) -> Published:
    """The topic's fields as one JSON object (see the AsyncAPI document); the tenant is the key's."""
    if topic not in TOPICS:
        raise Problem(404, f"unknown topic {topic!r}; topics: {', '.join(TOPICS)}")
    if event.get("tenant", who.tenant) != who.tenant:
        raise Problem(403, "tenant: an API key may only publish events of its own tenant")
    validated = codec.validate(topic, {**event, "tenant": who.tenant}, defaults={"source": "gateway"})
    delivery = await publisher.publish(topic, validated)
    return Published(event_id=str(validated.event_id), topic=topic,
                     partition=delivery.partition, offset=delivery.offset)
