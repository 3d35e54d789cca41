"""Publish a registered event, validated against its schema, for systems without Kafka.

Only the topics a client may write: `content-upserted` and `clicks` with the `publish` scope,
`training-requested` with `admin`. `model-published` and `reindex-requested` are the
platform's own (the trainer and deployer write them) and are never accepted from outside:
a forged `model-published` would make the deployer fetch and serve any artifact.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, status

from gateway.bodies import Published
from gateway.deps import PublisherDep, Publishing, resources
from gateway.problems import Problem
from gateway.routes.training import check_base_version, start_training
from schemas import codec
from schemas.topics import (
    CLICKS,
    CONTENT_UPSERTED,
    MODEL_PUBLISHED,
    REINDEX_REQUESTED,
    TOPICS,
    TRAINING_REQUESTED,
)
from schemas.training import TrainingRequested

router = APIRouter(prefix="/v1/events", tags=["events"])

# The scope each topic open to clients needs.
TOPIC_SCOPES = {CONTENT_UPSERTED.name: "publish", CLICKS.name: "publish", TRAINING_REQUESTED.name: "admin"}
PLATFORM_ONLY = {
    MODEL_PUBLISHED.name: "only the trainer publishes model versions (after its evaluation gate)",
    REINDEX_REQUESTED.name: "only the deployer requests reindexing; use POST /v1/reindex",
}


@router.post("/{topic}", status_code=status.HTTP_202_ACCEPTED, response_model=Published)
async def publish_event(
    topic: str, who: Publishing, publisher: PublisherDep, request: Request,
    event: Annotated[dict[str, Any], Body()],
) -> Published:
    """The topic's fields as one JSON object (see the AsyncAPI document); the tenant is the key's.
    Topics: `content-upserted` and `clicks` (publish scope), `training-requested` (admin)."""
    if topic not in TOPICS:
        raise Problem(404, f"unknown topic {topic!r}; topics: {', '.join(TOPICS)}")
    if topic in PLATFORM_ONLY:
        raise Problem(403, f"{topic} is not accepted from outside the platform: {PLATFORM_ONLY[topic]}")
    needed = TOPIC_SCOPES[topic]
    if not who.allows(needed):
        raise Problem(403, f"publishing to {topic} needs the '{needed}' scope")
    if event.get("tenant", who.tenant) != who.tenant:
        raise Problem(403, "tenant: an API key may only publish events of its own tenant")
    validated = codec.validate(topic, {**event, "tenant": who.tenant}, defaults={"source": "gateway"})
    if isinstance(validated, TrainingRequested):
        # The run id names a task: another tenant's is not the caller's to continue, and a
        # tenant has one unfinished training run at a time (409 otherwise).
        await check_base_version(validated.base_version, who.tenant, request)
        delivery = await start_training(validated, await resources(request).tasks(), publisher)
    else:
        delivery = await publisher.publish(topic, validated)
    return Published(event_id=str(validated.event_id), topic=topic,
                     partition=delivery.partition, offset=delivery.offset)
