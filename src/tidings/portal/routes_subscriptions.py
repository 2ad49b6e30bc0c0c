"""The home page (chart and subscriptions) and everything done to one subscription."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from tidings.domain.clock import now_ms
from tidings.domain.subscriptions import Subscription
from tidings.portal.chart import MINUTE_MS, per_minute, window_start
from tidings.portal.web import (
    Manager,
    PageKey,
    PortalError,
    SignedIn,
    checked_form,
    field,
    parse_utc,
    render,
    see_other,
    tidings_of,
)
from tidings.service import Invalid, Tidings
from tidings.web.sessions import Viewer

router = APIRouter(prefix="/portal", include_in_schema=False)


HEALTH_SAMPLE = 100
PAGE_SIZE = 50
CHART_MINUTES = 60


async def chart_context(tidings: Tidings, tenant_id: str) -> dict[str, Any]:
    now = now_ms()
    since = window_start(now, CHART_MINUTES)
    counts = await tidings.store.reports.attempt_histogram(tenant_id, since, MINUTE_MS)
    return {"chart": per_minute(counts, now, CHART_MINUTES)}


@router.get("/")
async def home(
    request: Request,
    who: SignedIn,
    after: PageKey = None,
) -> Response:
    tidings = tidings_of(request)
    page = await tidings.store.subscriptions.page(who.tenant_id, after, PAGE_SIZE)
    health = await tidings.store.reports.subscription_health(
        who.tenant_id, [s.id for s in page.items], HEALTH_SAMPLE
    )
    context = {
        "subscriptions": page.items,
        "health": health,
        "next_after": page.next_key,
        "sample": HEALTH_SAMPLE,
        **await chart_context(tidings, who.tenant_id),
    }
    return await render(request, who, "home.html", context)


@router.get("/chart")
async def chart(request: Request, who: SignedIn) -> Response:
    """The chart alone: htmx swaps it in every few seconds."""
    context = await chart_context(tidings_of(request), who.tenant_id)
    return await render(request, who, "_chart.html", context)


@router.get("/subscriptions/new")
async def new_subscription(request: Request, who: Manager) -> Response:
    return await render(request, who, "subscription_new.html", _form_context(request, {}, None))


def _form_context(
    request: Request, values: dict[str, str], error: Invalid | None
) -> dict[str, Any]:
    return {
        "values": values,
        "error": error,
        "catalog": [t.name for t in tidings_of(request).catalog],
    }


def _patterns(text: str) -> list[str]:
    return [p for p in text.replace(",", " ").split() if p]


@router.post("/subscriptions")
async def create_subscription(request: Request, who: Manager) -> Response:
    form = await checked_form(request, who)
    values = {name: field(form, name) for name in ("url", "event_types", "description")}
    tidings = tidings_of(request)
    try:
        sub, secret = await tidings.create_subscription(
            who.tenant_id,
            values["url"],
            _patterns(values["event_types"]),
            description=values["description"] or None,
            awaiting_verification=tidings.settings.verify_endpoints,
        )
    except Invalid as exc:
        context = _form_context(request, values, exc)
        return await render(request, who, "subscription_new.html", context, status_code=422)
    except ValueError as exc:
        context = _form_context(request, values, Invalid("eventTypes", str(exc)))
        return await render(request, who, "subscription_new.html", context, status_code=422)
    sub, _ = await tidings.verify_if_waiting(sub)
    return await _detail(request, who, sub, {"new_secret": secret}, status_code=201)


async def _owned(request: Request, who: Viewer, subscription_id: str) -> Subscription:
    sub = await tidings_of(request).store.subscriptions.get(who.tenant_id, subscription_id)
    if sub is None:
        raise PortalError(404, "No such subscription.")
    return sub


async def _detail(
    request: Request,
    who: Viewer,
    sub: Subscription,
    extra: dict[str, Any],
    *,
    outcome: str | None = None,
    before: int | None = None,
    status_code: int = 200,
) -> Response:
    tidings = tidings_of(request)
    store = tidings.store
    log = await store.subscriptions.attempts(who.tenant_id, sub.id, outcome, before, PAGE_SIZE)
    health = await store.reports.subscription_health(who.tenant_id, [sub.id], HEALTH_SAMPLE)
    lanes = await store.reports.lane_figures(who.tenant_id, [sub.id], 1)
    context = {
        "sub": sub,
        "health": health[sub.id],
        "lane": lanes[0] if lanes else None,
        "sample": HEALTH_SAMPLE,
        "attempts": log.items,
        "next_before": log.next_key,
        "outcome": outcome,
        "catalog": sorted((t.name for t in tidings.catalog), key=lambda name: not sub.wants(name)),
        "test_result": None,
        "new_secret": None,
        "error": None,
        "notice": None,
        **extra,
    }
    return await render(request, who, "subscription.html", context, status_code=status_code)


@router.get("/subscriptions/{subscription_id}")
async def subscription_page(
    request: Request,
    who: SignedIn,
    subscription_id: str,
    outcome: Annotated[str | None, Query(pattern="^(succeeded|failed)?$")] = None,
    before: PageKey = None,
    recovered: PageKey = None,
) -> Response:
    sub = await _owned(request, who, subscription_id)
    notice = None if recovered is None else f"{recovered} failed deliveries queued again."
    return await _detail(
        request, who, sub, {"notice": notice}, outcome=outcome or None, before=before
    )


@router.post("/subscriptions/{subscription_id}/edit")
async def edit_subscription(request: Request, subscription_id: str, who: Manager) -> Response:
    form = await checked_form(request, who)
    sub = await _owned(request, who, subscription_id)
    changes = {
        "url": field(form, "url"),
        "event_types": _patterns(field(form, "event_types")),
        "description": field(form, "description") or None,
    }
    if changes["url"] == sub.url:
        del changes["url"]
    tidings = tidings_of(request)
    try:
        edited = await tidings.edit_subscription(sub, changes)
    except Invalid as exc:
        return await _detail(request, who, sub, {"error": exc}, status_code=422)
    if edited is None:
        raise PortalError(404, "No such subscription.")
    await tidings.verify_if_waiting(edited)
    return see_other(f"/portal/subscriptions/{sub.id}")


@router.post("/subscriptions/{subscription_id}/enable")
async def enable_subscription(request: Request, subscription_id: str, who: Manager) -> Response:
    return await _set_enabled(request, who, subscription_id, True)


@router.post("/subscriptions/{subscription_id}/disable")
async def disable_subscription(request: Request, subscription_id: str, who: Manager) -> Response:
    return await _set_enabled(request, who, subscription_id, False)


async def _set_enabled(request: Request, who: Viewer, subscription_id: str, on: bool) -> Response:
    await checked_form(request, who)
    sub = await _owned(request, who, subscription_id)
    if await tidings_of(request).edit_subscription(sub, {"enabled": on}) is None:
        raise PortalError(404, "No such subscription.")
    return see_other(f"/portal/subscriptions/{sub.id}")


@router.post("/subscriptions/{subscription_id}/delete")
async def delete_subscription(request: Request, subscription_id: str, who: Manager) -> Response:
    await checked_form(request, who)
    sub = await _owned(request, who, subscription_id)
    await tidings_of(request).store.subscriptions.delete(who.tenant_id, sub.id)
    return see_other("/portal/")


@router.post("/subscriptions/{subscription_id}/rotate")
async def rotate_secret(request: Request, subscription_id: str, who: Manager) -> Response:
    await checked_form(request, who)
    sub = await _owned(request, who, subscription_id)
    rotated, secret = await tidings_of(request).rotate_secret(sub)
    return await _detail(request, who, rotated, {"new_secret": secret})


@router.post("/subscriptions/{subscription_id}/test")
async def send_test(request: Request, subscription_id: str, who: Manager) -> Response:
    """A signed sample event now; htmx gets the result alone, a plain form the whole page."""
    form = await checked_form(request, who)
    sub = await _owned(request, who, subscription_id)
    try:
        result = await tidings_of(request).test_delivery(sub, field(form, "event_type"), True)
    except Invalid as exc:
        raise PortalError(400, str(exc)) from exc
    if request.headers.get("HX-Request") == "true":
        return await render(request, who, "_test_result.html", {"test_result": result})
    return await _detail(request, who, sub, {"test_result": result})


@router.post("/subscriptions/{subscription_id}/recover")
async def recover(request: Request, subscription_id: str, who: Manager) -> Response:
    form = await checked_form(request, who)
    sub = await _owned(request, who, subscription_id)
    since = parse_utc(field(form, "since"), "since")
    if since is None:
        raise PortalError(400, "since: pick the time to recover failed deliveries from")
    count = await tidings_of(request).store.reports.recover_failed(who.tenant_id, since, sub.id)
    return see_other(f"/portal/subscriptions/{sub.id}?recovered={count}")
