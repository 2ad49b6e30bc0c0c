"""Emit, poll and inspect events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Header, Query, Response
from fastapi.routing import APIRoute

from tidings.api.auth import (
    EventsReader,
    EventsWriter,
    TidingsDep,
    WebhooksWriter,
)
from tidings.api.pagination import decode_cursor, set_next_cursor
from tidings.api.schemas import (
    EVENT_TYPE_LIST,
    Attempt,
    EmitEvent,
    EventEnvelope,
    Redeliver,
    RedeliverResult,
)
from tidings.domain.events import normalize_event_type
from tidings.service import Tidings
from tidings.storage import ApiKey, StoredEvent
from tidings.web.errors import ApiError, or_not_found

EMIT_PATH = "/api/v1/events"
IDEMPOTENCY_KEY_LIMIT = 255

router = APIRouter(prefix=EMIT_PATH, tags=["events"])

JSON = "application/json"


def envelope_response(
    body: str, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(body, status_code=status, media_type=JSON, headers=headers)


async def owned_event(tidings: Tidings, key: ApiKey, event_id: str) -> StoredEvent:
    return or_not_found(await tidings.store.events.get_event(key.tenant_id, event_id), "event")


@router.post("", status_code=201, response_model=EventEnvelope)
async def emit_event(
    request: EmitEvent,
    key: EventsWriter,
    tidings: TidingsDep,
    idempotency_key: Annotated[
        str | None, Header(min_length=1, max_length=IDEMPOTENCY_KEY_LIMIT)
    ] = None,
) -> Response:
    """Store an event and deliver it to every matching subscription.

    Retrying with the same ``Idempotency-Key`` returns the original event (with
    ``Idempotent-Replayed: true``); reusing a key for a different event is a 409. An empty
    key is refused (422), not taken as one key shared by every emit that sends it empty.
    """
    event, created = await tidings.emit(
        key.tenant_id,
        request.type,
        request.payload,
        request.metadata,
        idempotency_key,
        request.ordering_key,
    )
    return emitted_response(event, created)


def emitted_response(event: StoredEvent, created: bool) -> Response:
    """An emit's 201: the envelope, where it lives, and whether it was a replay."""
    headers = {"Location": f"{EMIT_PATH}/{event.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return envelope_response(event.body, 201, headers)


def emit_route() -> APIRoute:
    """The emit route itself (the fast path names its requests' spans after it)."""
    for route in router.routes:
        if isinstance(route, APIRoute) and route.endpoint is emit_event:
            return route
    raise LookupError("the emit route is not registered")


@router.get("", response_model=list[EventEnvelope])
async def list_events(
    key: EventsReader,
    tidings: TidingsDep,
    type: Annotated[
        list[Annotated[str, Query(pattern=EVENT_TYPE_LIST, max_length=500)]] | None,
        Query(description="Filter; repeat or comma-separate for several.", max_length=20),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    after: Annotated[
        str | None, Query(max_length=64, description="Resume after this event id.")
    ] = None,
) -> Response:
    """Events oldest first; the next page's cursor is in ``X-Paging-Cursor``.

    The header is absent on the last page. To poll for newer events later, pass the
    last event id you processed as ``after``.
    """
    types = [normalize_event_type(t) for raw in type or [] for t in raw.split(",") if t]
    position = decode_cursor("e", cursor)
    if after is not None:
        if cursor is not None:
            raise ApiError(400, "bad_request", "pass either cursor or after, not both")
        position = (await owned_event(tidings, key, after)).seq
    page = await tidings.store.events.list_events(key.tenant_id, types, position, limit)
    response = envelope_response("[" + ",".join(e.body for e in page.items) + "]")
    set_next_cursor(response, "e", page.next_key)
    return response


@router.get("/{event_id}", response_model=EventEnvelope)
async def get_event(event_id: str, key: EventsReader, tidings: TidingsDep) -> Response:
    return envelope_response((await owned_event(tidings, key, event_id)).body)


@router.get("/{event_id}/deliveries", response_model=list[Attempt])
async def event_deliveries(event_id: str, key: EventsReader, tidings: TidingsDep) -> list[Attempt]:
    """Every delivery attempt for this event, oldest first."""
    event = await owned_event(tidings, key, event_id)
    return [
        Attempt.of(a) for a in await tidings.store.events.event_attempts(key.tenant_id, event.id)
    ]


@router.post("/{event_id}/redeliver", status_code=202, response_model=RedeliverResult)
async def redeliver_event(
    event_id: str,
    key: WebhooksWriter,
    tidings: TidingsDep,
    request: Annotated[Redeliver | None, Body()] = None,
) -> RedeliverResult:
    """Queue the event again for one subscription, or for every one that matches it now."""
    event = await owned_event(tidings, key, event_id)
    subscription_id = request.subscription_id if request else None
    targets = await tidings.redeliver(key.tenant_id, event, subscription_id)
    return RedeliverResult(event_id=event.id, subscription_ids=targets)
