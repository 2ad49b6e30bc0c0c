"""The event browser, one event with every attempt, and redelivery."""

from __future__ import annotations

import json
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from tidings.portal.web import (
    Manager,
    PageKey,
    PortalError,
    SignedIn,
    checked_form,
    field,
    parse_utc,
    recovery_since,
    render,
    see_other,
    tidings_of,
)
from tidings.storage import EventFilter

router = APIRouter(prefix="/portal", include_in_schema=False)


PAGE_SIZE = 50
STATUSES = ("pending", "succeeded", "failed", "cancelled")
Text = Annotated[str, Query(max_length=200)]


@router.get("/events")
async def events_page(
    request: Request,
    who: SignedIn,
    type: Text = "",
    status: Annotated[str, Query(pattern="^(pending|succeeded|failed|cancelled)?$")] = "",
    subscription: Text = "",
    before_time: Text = "",
    before: PageKey = None,
    recovered: PageKey = None,
) -> Response:
    tidings = tidings_of(request)
    if type.startswith("evt_") and not (status or subscription or before_time):
        event = await tidings.store.events.get_event(who.tenant_id, type)
        if event is not None:
            return see_other(f"/portal/events/{event.id}")
    where = EventFilter(
        type=type.strip().lower() or None,
        subscription_id=subscription or None,
        status=status or None,
        before_ms=parse_utc(before_time, "before"),
    )
    page = await tidings.store.reports.browse_events(who.tenant_id, where, before, PAGE_SIZE)
    filters = {
        "type": type,
        "status": status,
        "subscription": subscription,
        "before_time": before_time,
    }
    next_query = None
    if page.next_key is not None:
        next_query = urlencode({**filters, "before": page.next_key, "before_time": ""})
    subs = await tidings.store.subscriptions.page(who.tenant_id, None, 500)
    context = {
        "events": page.items,
        "filters": filters,
        "next_query": next_query,
        "statuses": STATUSES,
        "subscriptions": subs.items,
        "catalog": [t.name for t in tidings.catalog],
        "notice": None if recovered is None else f"{recovered} failed deliveries queued again.",
    }
    return await render(request, who, "events.html", context)


@router.get("/events/{event_id}")
async def event_page(
    request: Request,
    who: SignedIn,
    event_id: str,
    queued: PageKey = None,
) -> Response:
    store = tidings_of(request).store
    event = await store.events.get_event(who.tenant_id, event_id)
    if event is None:
        raise PortalError(404, "No such event.")
    deliveries = await store.reports.event_deliveries(who.tenant_id, event.id)
    attempts = await store.events.event_attempts(who.tenant_id, event.id)
    subs = await store.subscriptions.page(who.tenant_id, None, 500)
    context = {
        "event": event,
        "envelope": json.dumps(json.loads(event.body), indent=2, ensure_ascii=False),
        "deliveries": deliveries,
        "attempts": attempts,
        "urls": {s.id: s.url for s in subs.items},
        "subscriptions": [s for s in subs.items if s.enabled],
        "notice": None if queued is None else f"Queued for {queued} subscription(s).",
    }
    return await render(request, who, "event.html", context)


@router.post("/events/{event_id}/redeliver")
async def redeliver(request: Request, event_id: str, who: Manager) -> Response:
    form = await checked_form(request, who)
    tidings = tidings_of(request)
    event = await tidings.store.events.get_event(who.tenant_id, event_id)
    if event is None:
        raise PortalError(404, "No such event.")
    targets = await tidings.redeliver(who.tenant_id, event, field(form, "subscription") or None)
    return see_other(f"/portal/events/{event.id}?queued={len(targets)}")


@router.post("/recover")
async def recover_all(request: Request, who: Manager) -> Response:
    """Queue again every failed delivery since a time, to one or every subscription."""
    form = await checked_form(request, who)
    since = recovery_since(form)
    subscription = field(form, "subscription") or None
    count = await tidings_of(request).store.reports.recover_failed(
        who.tenant_id, since, subscription
    )
    return see_other(f"/portal/events?status=pending&recovered={count}")
