"""Clicks and conversions of a search session."""

from __future__ import annotations

from fastapi import APIRouter, status

from gateway.bodies import Accepted, SessionEventIn, SessionEvents
from gateway.deps import PublisherDep, Publishing, SettingsDep
from gateway.problems import batch_too_large
from schemas import codec
from schemas.topics import CLICKS

router = APIRouter(prefix="/v1", tags=["clicks"])


@router.post("/clicks", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted)
async def record_clicks(
    body: SessionEventIn | SessionEvents, who: Publishing, publisher: PublisherDep, settings: SettingsDep
) -> Accepted:
    """One click or conversion, or `{"events": [...]}` of them (at most `gateway_max_batch`)."""
    items = body.events if isinstance(body, SessionEvents) else [body]
    if len(items) > settings.gateway_max_batch:
        raise batch_too_large("events", len(items), settings.gateway_max_batch)
    events = [
        codec.validate(CLICKS, {**item.model_dump(exclude_none=True), "tenant": who.tenant},
                       defaults={"source": "gateway"})
        for item in items
    ]
    await publisher.publish_many(CLICKS, events)
    return Accepted(event_ids=[str(e.event_id) for e in events], accepted=len(events))
