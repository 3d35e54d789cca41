"""Clicks and conversions of a search session."""

from __future__ import annotations

from fastapi import APIRouter, status

from gateway.bodies import Accepted, SessionEventIn, SessionEvents
from gateway.deps import PublisherDep, Publishing
from schemas import codec
from schemas.topics import CLICKS

router = APIRouter(prefix="/v1", tags=["clicks"])


@router.post("/clicks", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted)
async def record_clicks(
    body: SessionEventIn | SessionEvents, who: Publishing, publisher: PublisherDep
) -> Accepted:
    """One click or conversion, or `{"events": [...]}` of them."""
    items = body.events if isinstance(body, SessionEvents) else [body]
    events = [
        codec.validate(CLICKS, {**item.model_dump(exclude_none=True), "tenant": who.tenant},
                       defaults={"source": "gateway"})
        for item in items
    ]
    await publisher.publish_many(CLICKS, events)
    return Accepted(event_ids=[str(e.event_id) for e in events], accepted=len(events))
