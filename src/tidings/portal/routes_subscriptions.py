"""The home page (chart and subscriptions) and everything done to one subscription."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.datastructures import FormData

from tidings.domain.clock import now_ms
from tidings.domain.retry import RetryOn
from tidings.domain.signatures import SignatureScheme
from tidings.domain.subscriptions import Subscription
from tidings.portal.chart import MINUTE_MS, per_minute, window_start
from tidings.portal.dialects import (
    CUSTOM,
    PRESET_BY_SLUG,
    PRESETS,
    SCHEMES,
    describe,
    preset_of,
)
from tidings.portal.web import (
    Manager,
    PageKey,
    PortalError,
    SignedIn,
    checked_form,
    field,
    recovery_since,
    render,
    see_other,
    tidings_of,
)
from tidings.service import Invalid, Tidings
from tidings.transform import Cancelled, TransformFailed, TransformUnavailable
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
        "schemes": list(SCHEMES.values()),
    }


def _patterns(text: str) -> list[str]:
    return [p for p in text.replace(",", " ").split() if p]


@router.post("/subscriptions")
async def create_subscription(request: Request, who: Manager) -> Response:
    form = await checked_form(request, who)
    names = ("url", "event_types", "description", "signature_scheme")
    values = {name: field(form, name) for name in names}
    tidings = tidings_of(request)
    try:
        sub, secret = await tidings.create_subscription(
            who.tenant_id,
            values["url"],
            _patterns(values["event_types"]),
            description=values["description"] or None,
            signature_scheme=_scheme(values["signature_scheme"]),
            awaiting_verification=tidings.settings.verify_endpoints,
        )
    except Invalid as exc:
        context = _form_context(request, values, exc)
        return await render(request, who, "subscription_new.html", context, status_code=422)
    except ValueError as exc:
        context = _form_context(request, values, Invalid("eventTypes", str(exc)))
        return await render(request, who, "subscription_new.html", context, status_code=422)
    sub, _ = await tidings.verify_if_waiting(sub)
    return await _detail(request, who, sub, _shown_once(sub, secret), status_code=201)


def _scheme(value: str) -> SignatureScheme:
    if not value:
        return SignatureScheme.HMAC
    try:
        return SignatureScheme(value)
    except ValueError:
        known = ", ".join(s.value for s in SignatureScheme)
        raise Invalid("signatureScheme", f"must be one of {known}") from None


def _shown_once(sub: Subscription, secret: str | None) -> dict[str, Any]:
    """What the receiver needs, shown on the page a secret is made: the shared secret, or
    for the asymmetric schemes the public key (the private key never leaves tidings, as
    the API never returns an RSA one)."""
    if SCHEMES[sub.signature_scheme].key_label is not None:
        return {"new_public_key": sub.public_key}
    return {"new_secret": secret}


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
    scheme = SCHEMES[sub.signature_scheme]
    context = {
        "sub": sub,
        "scheme": scheme,
        "now": now_ms(),
        "presets": PRESETS,
        "preset": preset_of(sub.retry),
        "retry_lines": describe(sub.retry),
        "retry_on_choices": [r.value for r in RetryOn],
        "retry_form": _retry_form_of(sub),
        "instance_retry": _instance_retry(tidings),
        "instance_breaker": tidings.settings.breaker_threshold,
        "health": health[sub.id],
        "lane": lanes[0] if lanes else None,
        "sample": HEALTH_SAMPLE,
        "attempts": log.items,
        "next_before": log.next_key,
        "outcome": outcome,
        "catalog": sorted((t.name for t in tidings.catalog), key=lambda name: not sub.wants(name)),
        "test_result": None,
        "new_secret": None,
        "new_public_key": None,
        "error": None,
        "retry_error": None,
        "headers_error": None,
        "notice": None,
        "filter_pretty": _pretty(sub.filter),
        "filter_form": _pretty(sub.filter),
        "filter_error": None,
        "filter_result": None,
        "transformation_form": sub.transformation or "",
        "transformation_error": None,
        "transformation_result": None,
        **extra,
    }
    return await render(request, who, "subscription.html", context, status_code=status_code)


@router.get("/subscriptions/{subscription_id}")
async def subscription_page(
    request: Request,
    who: SignedIn,
    subscription_id: str,
    outcome: Annotated[str | None, Query(pattern="^(succeeded|failed|cancelled)?$")] = None,
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
    return await _detail(request, who, rotated, _shown_once(rotated, secret))


@router.post("/subscriptions/{subscription_id}/end-rotation")
async def end_rotation(request: Request, subscription_id: str, who: Manager) -> Response:
    """Only the new secret signs from now on (for one-signature schemes: it takes over)."""
    await checked_form(request, who)
    sub = await _owned(request, who, subscription_id)
    try:
        await tidings_of(request).end_rotation(sub)
    except Invalid as exc:
        raise PortalError(404, "No such subscription.") from exc
    return see_other(f"/portal/subscriptions/{sub.id}")


def _instance_retry(tidings: Tidings) -> str:
    settings = tidings.settings
    retries = settings.retry_max_attempts - 1
    return (
        f"up to {retries} retries, from {settings.retry_base_delay:g} s doubling, "
        f"disabled after {settings.breaker_threshold} failures in a row"
    )


def _retry_form_of(sub: Subscription) -> dict[str, Any]:
    """The custom retry form filled in with the subscription's policy."""
    rules = sub.retry
    delays = rules.to_dict().get("delays") if rules is not None else None
    retry_on = rules.retry_on if rules is not None else None
    threshold = rules.breaker_threshold if rules is not None else None
    return {
        "delays": ", ".join(str(d) for d in delays) if delays is not None else "",
        "retry_on": {r.value for r in (RetryOn if retry_on is None else retry_on)},
        "breaker_threshold": "" if threshold is None else str(threshold),
    }


def _submitted_retry_form(form: FormData) -> dict[str, Any]:
    return {
        "delays": field(form, "delays"),
        "retry_on": {v for v in form.getlist("retry_on") if isinstance(v, str)},
        "breaker_threshold": field(form, "breaker_threshold"),
    }


def _custom_policy(submitted: dict[str, Any]) -> dict[str, Any] | None:
    """The API's ``retryPolicy`` from the custom form (None when it sets nothing); the
    service checks the numbers, this only reads them."""
    policy: dict[str, Any] = {}
    if submitted["delays"]:
        pieces = submitted["delays"].replace(",", " ").split()
        policy["delays"] = [_number(p, f"retryPolicy.delays[{n}]") for n, p in enumerate(pieces)]
    chosen: set[str] = submitted["retry_on"]
    known = [r.value for r in RetryOn]
    if chosen != set(known):  # every box ticked: no list, so the default (all) holds
        policy["retryOn"] = [r for r in known if r in chosen] + sorted(chosen - set(known))
    if submitted["breaker_threshold"]:
        try:
            policy["breakerThreshold"] = int(submitted["breaker_threshold"])
        except ValueError:
            raise Invalid("retryPolicy.breakerThreshold", "must be a whole number") from None
    return policy or None


def _number(text: str, name: str) -> float | int:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise Invalid(name, "must be a number of seconds") from None


@router.post("/subscriptions/{subscription_id}/retry")
async def edit_retry_policy(request: Request, subscription_id: str, who: Manager) -> Response:
    """A preset (``preset``: default, workestra, gohighlevel) or the custom form's policy;
    either replaces the whole of the subscription's ``retryPolicy``."""
    form = await checked_form(request, who)
    sub = await _owned(request, who, subscription_id)
    slug = field(form, "preset")
    submitted = _submitted_retry_form(form)
    policy: Mapping[str, Any] | None
    try:
        if slug == CUSTOM:
            policy = _custom_policy(submitted)
        elif slug in PRESET_BY_SLUG:
            policy = PRESET_BY_SLUG[slug].policy
        else:
            raise Invalid("preset", "pick one of the presets or the custom form")
        edited = await tidings_of(request).edit_subscription(sub, {"retry_policy": policy})
    except Invalid as exc:
        extra: dict[str, Any] = {"retry_error": exc}
        if slug == CUSTOM:
            extra["retry_form"] = submitted  # what was typed, to correct
        return await _detail(request, who, sub, extra, status_code=422)
    if edited is None:
        raise PortalError(404, "No such subscription.")
    return see_other(f"/portal/subscriptions/{sub.id}#retry")


def _header_lines(text: str) -> dict[str, str]:
    """``Name: value`` per line (blank lines skipped) as a map; the service checks it."""
    found: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not name:
            raise Invalid("headers", f"line {n}: write one header per line as Name: value")
        if name in found:
            raise Invalid(f"headers.{name}", "given twice")
        found[name] = value.strip()
    return found


@router.post("/subscriptions/{subscription_id}/headers")
async def edit_headers(request: Request, subscription_id: str, who: Manager) -> Response:
    """Replace every static header (an empty form removes them all). Values are written
    only: the page lists names, and an error never echoes what was typed."""
    form = await checked_form(request, who)
    sub = await _owned(request, who, subscription_id)
    try:
        raw = form.get("headers")
        headers = _header_lines(raw if isinstance(raw, str) else "")
        edited = await tidings_of(request).edit_subscription(sub, {"headers": headers or None})
    except Invalid as exc:
        return await _detail(request, who, sub, {"headers_error": exc}, status_code=422)
    if edited is None:
        raise PortalError(404, "No such subscription.")
    return see_other(f"/portal/subscriptions/{sub.id}#headers")


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
    since = recovery_since(form)
    count = await tidings_of(request).store.reports.recover_failed(who.tenant_id, since, sub.id)
    return see_other(f"/portal/subscriptions/{sub.id}?recovered={count}")


def _pretty(spec: Mapping[str, Any] | None) -> str:
    return json.dumps(spec, indent=2, ensure_ascii=False) if spec is not None else ""


def _typed_filter(text: str) -> dict[str, Any] | None:
    """The filter textarea as JSON (empty: no filter); the service checks the rest."""
    if not text.strip():
        return None
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as exc:
        raise Invalid("filter", f"filter: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise Invalid("filter", "filter: must be a JSON object of paths and conditions")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


@dataclass(frozen=True)
class FilterTry:
    """What the filter's "try it" shows: whether the envelope passes, or why it cannot say."""

    event_type: str
    source: str
    matches: bool = False
    error: str | None = None
    envelope: str = ""


@dataclass(frozen=True)
class TriedEnvelope:
    """The envelope a "try it" runs on: the chosen type's catalog sample or latest event."""

    event_type: str
    source: str
    envelope: dict[str, Any]

    @property
    def shown(self) -> str:
        return json.dumps(self.envelope, indent=2, ensure_ascii=False)


async def _tried_envelope(request: Request, who: Viewer, form: FormData) -> TriedEnvelope:
    """The form's ``event_type`` and ``source`` (``sample`` or ``latest``) as an envelope;
    an unknown type is an ``Invalid``."""
    tidings = tidings_of(request)
    event_type = field(form, "event_type")
    known = tidings.catalog.find(event_type) if event_type else None
    if known is None:
        raise Invalid("event_type", f"unknown event type {event_type!r}")
    if field(form, "source") == "latest":
        latest = await tidings.store.events.recent_events(who.tenant_id, known.name, 1)
        if latest:
            return TriedEnvelope(known.name, "the latest event", json.loads(latest[0].body))
        source = "the catalog sample (no event of this type yet)"
    else:
        source = "the catalog sample"
    envelope = tidings.sample_envelope(who.tenant_id, known.name, known.sample)
    return TriedEnvelope(known.name, source, envelope)


async def _try_filter(request: Request, who: Viewer, form: FormData) -> FilterTry:
    """Run the typed filter on the catalog sample of the chosen event type (or on its
    latest real event), as ``POST /api/v1/filters/test`` does."""
    try:
        tried = await _tried_envelope(request, who, form)
    except Invalid as exc:
        return FilterTry(field(form, "event_type"), "", error=str(exc))
    tidings = tidings_of(request)
    try:
        matches = tidings.test_filter(_typed_filter(_raw(form, "filter")), tried.envelope)
    except Invalid as exc:
        return FilterTry(tried.event_type, tried.source, error=str(exc), envelope=tried.shown)
    return FilterTry(tried.event_type, tried.source, matches, envelope=tried.shown)


def _raw(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


@router.post("/subscriptions/{subscription_id}/filter")
async def edit_filter(request: Request, subscription_id: str, who: Manager) -> Response:
    """Replace the filter (an empty textarea removes it); a refused one is shown again,
    as typed, with the path and operator at fault."""
    return await _save_option(request, who, subscription_id, "filter", _typed_filter)


@dataclass(frozen=True)
class TransformationTry:
    """What the transformation's "try it" shows: the request it would send (or that it
    cancels, or its error), and whether the saved filter lets the event through at all."""

    event_type: str
    source: str
    url: str = ""
    body: str = ""
    cancelled: bool = False
    error: str | None = None
    filter_matches: bool | None = None
    envelope: str = ""


async def _try_transformation(
    request: Request, who: Viewer, sub: Subscription, form: FormData
) -> TransformationTry:
    """Run the typed script on the chosen envelope, as a delivery of ``sub`` would."""
    try:
        tried = await _tried_envelope(request, who, form)
    except Invalid as exc:
        return TransformationTry(field(form, "event_type"), "", error=str(exc))
    tidings = tidings_of(request)
    passes = None if sub.filter is None else tidings.test_filter(sub.filter, tried.envelope)
    known = TransformationTry(
        tried.event_type, tried.source, filter_matches=passes, envelope=tried.shown
    )
    script = _raw(form, "transformation")
    if not script.strip():
        return dataclasses.replace(known, error="type a script to try")
    try:
        outcome = await tidings.try_transformation(who.tenant_id, script, sub.url, tried.envelope)
    except TransformUnavailable as exc:
        return dataclasses.replace(known, error=f"transformations cannot run now: {exc}")
    if isinstance(outcome, TransformFailed):
        return dataclasses.replace(known, error=str(outcome))
    if isinstance(outcome, Cancelled):
        return dataclasses.replace(known, cancelled=True)
    pretty = json.dumps(outcome.payload, indent=2, ensure_ascii=False)
    return dataclasses.replace(known, url=outcome.url, body=pretty)


@router.post("/subscriptions/{subscription_id}/transformation")
async def edit_transformation(request: Request, subscription_id: str, who: Manager) -> Response:
    """Replace the transformation (an empty textarea removes it); a script that does not
    compile is shown again, as typed, with its error and line."""
    return await _save_option(request, who, subscription_id, "transformation", _typed_script)


@router.post("/subscriptions/{subscription_id}/transformation/try")
async def try_transformation(request: Request, subscription_id: str, who: Manager) -> Response:
    """The dry run of the typed script (nothing is saved or sent); htmx gets the result
    alone, a plain form the whole page with the script as typed."""
    form = await checked_form(request, who)
    sub = await _owned(request, who, subscription_id)
    tried = await _try_transformation(request, who, sub, form)
    return await _show_try(request, who, sub, form, "transformation", tried)


@router.post("/subscriptions/{subscription_id}/filter/try")
async def try_filter(request: Request, subscription_id: str, who: Manager) -> Response:
    """The dry run of the typed filter (nothing is saved); htmx gets the verdict alone, a
    plain form the whole page with the filter as typed."""
    form = await checked_form(request, who)
    sub = await _owned(request, who, subscription_id)
    tried = await _try_filter(request, who, form)
    return await _show_try(request, who, sub, form, "filter", tried)


async def _save_option(
    request: Request,
    who: Viewer,
    subscription_id: str,
    name: str,
    typed_value: Callable[[str], Any],
) -> Response:
    """Save the card ``name``'s textarea as that option (``typed_value`` reads it); a
    refused one is shown again as typed, with why (``{name}_error``, ``{name}_form``)."""
    form = await checked_form(request, who)
    sub = await _owned(request, who, subscription_id)
    typed = _raw(form, name)
    try:
        edited = await tidings_of(request).edit_subscription(sub, {name: typed_value(typed)})
    except Invalid as exc:
        extra = {f"{name}_error": exc, f"{name}_form": typed}
        return await _detail(request, who, sub, extra, status_code=422)
    if edited is None:
        raise PortalError(404, "No such subscription.")
    return see_other(f"/portal/subscriptions/{sub.id}#{name}")


async def _show_try(
    request: Request, who: Viewer, sub: Subscription, form: FormData, name: str, tried: Any
) -> Response:
    """A "try it" of the card ``name``: htmx gets ``_{name}_result.html`` alone, a plain
    form the whole page with the textarea as typed."""
    if request.headers.get("HX-Request") == "true":
        return await render(request, who, f"_{name}_result.html", {f"{name}_result": tried})
    extra = {f"{name}_result": tried, f"{name}_form": _raw(form, name)}
    return await _detail(request, who, sub, extra)


def _typed_script(text: str) -> str | None:
    return text if text.strip() else None
