"""The event-type catalog."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from tidings.api.auth import require
from tidings.api.errors import not_found
from tidings.api.schemas import EventTypeOut
from tidings.domain.catalog import CATALOG, EventType, find_event_type
from tidings.storage import ApiKey

router = APIRouter(prefix="/api/v1/event-types", tags=["event types"])


def _out(event_type: EventType) -> EventTypeOut:
    return EventTypeOut(
        name=event_type.name,
        description=event_type.description,
        schema=dict(event_type.schema),
        sample_payload=dict(event_type.sample),
    )


@router.get("", response_model=list[EventTypeOut])
async def list_event_types(_: ApiKey = Depends(require("events:read"))) -> list[EventTypeOut]:
    return [_out(t) for t in CATALOG]


@router.get("/{name}", response_model=EventTypeOut)
async def get_event_type(name: str, _: ApiKey = Depends(require("events:read"))) -> EventTypeOut:
    found = find_event_type(name)
    if found is None:
        raise not_found("event type")
    return _out(found)
