"""The event-type catalog."""

from __future__ import annotations

from fastapi import APIRouter

from tidings.api.auth import EventsReader, TidingsDep
from tidings.api.schemas import EventTypeOut
from tidings.domain.catalog import EventType
from tidings.web.errors import or_not_found

router = APIRouter(prefix="/api/v1/event-types", tags=["event types"])


def _out(event_type: EventType) -> EventTypeOut:
    return EventTypeOut(
        name=event_type.name,
        description=event_type.description,
        schema=dict(event_type.schema),
        sample_payload=dict(event_type.sample),
    )


@router.get("", response_model=list[EventTypeOut])
async def list_event_types(_: EventsReader, tidings: TidingsDep) -> list[EventTypeOut]:
    return [_out(t) for t in tidings.catalog]


@router.get("/{name}", response_model=EventTypeOut)
async def get_event_type(name: str, _: EventsReader, tidings: TidingsDep) -> EventTypeOut:
    return _out(or_not_found(tidings.catalog.find(name), "event type"))
