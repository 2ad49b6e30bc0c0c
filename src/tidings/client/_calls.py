"""Every API operation as a ``Call``: what to send and how to read the answer.

Nothing here does I/O, so ``Client`` and ``AsyncClient`` share all of it and differ
only in how they send a request. The builders' docstrings are the client methods' docs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypedDict, TypeVar, Unpack
from urllib.parse import quote

import httpx

from tidings import __version__
from tidings.client import models
from tidings.client.errors import TidingsError, error_from

T = TypeVar("T")
M = TypeVar("M")
Parse = Callable[[httpx.Response], T]
CURSOR_HEADER = "X-Paging-Cursor"
API_PREFIX = "/api/v1"
Status = Literal["succeeded", "failed", "cancelled"]


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request, and the parser for its 2xx answer."""

    method: str
    path: str
    parse: Parse[T]
    params: Mapping[str, Any] = field(default_factory=dict)
    body: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Pages(Generic[T]):
    """A listing walked page by page: ``at(None)`` is the first page's call."""

    at: Callable[[str | None], Call[models.Page[T]]]


@dataclass(frozen=True)
class Target:
    """Where requests go and who they are from."""

    base_url: str
    api_key: str

    @classmethod
    def of(cls, base_url: str, api_key: str) -> Target:
        """Accepts the server root or the ``/api/v1`` root, with or without a final slash."""
        base = base_url.rstrip("/").removesuffix(API_PREFIX)
        return cls(base, api_key)

    def request(self, http: httpx.Client | httpx.AsyncClient, call: Call[Any]) -> httpx.Request:
        headers = {
            "X-Api-Key": self.api_key,
            "Accept": "application/json",
            "User-Agent": f"tidings-client/{__version__}",
            **call.headers,
        }
        return http.build_request(
            call.method,
            self.base_url + call.path,
            params={k: v for k, v in call.params.items() if v is not None},
            json=call.body,
            headers=headers,
        )


def finish(call: Call[T], response: httpx.Response) -> T:
    """The parsed answer, or the ``TidingsError`` for a non-2xx or an unreadable body."""
    if not response.is_success:
        raise error_from(response)
    try:
        return call.parse(response)
    except (ValueError, KeyError, TypeError) as exc:
        message = f"unexpected response body ({type(exc).__name__}: {exc})"
        raise TidingsError(response.status_code, "invalid_response", message) from exc


# Parsers


def one(build: Callable[[Mapping[str, Any]], M]) -> Parse[M]:
    return lambda response: build(response.json())


def many(build: Callable[[Mapping[str, Any]], M]) -> Parse[list[M]]:
    return lambda response: [build(item) for item in response.json()]


def paged(build: Callable[[Mapping[str, Any]], M]) -> Parse[models.Page[M]]:
    return lambda response: models.Page(many(build)(response), response.headers.get(CURSOR_HEADER))


def nothing(_: httpx.Response) -> None:
    return None


def path(*parts: str) -> str:
    """An API path; each variable part is percent-encoded, slashes included."""
    return API_PREFIX + "".join("/" + quote(part, safe="") for part in parts)


def strings(value: Any) -> list[str] | None:
    """One string or several, as a list (a lone ``"client.*"`` is not seven types)."""
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def drop_none(**values: Any) -> dict[str, Any]:
    return {models.camel(k): v for k, v in values.items() if v is not None}


# Events


def emit_event(
    type: str,
    payload: Mapping[str, Any],
    metadata: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
    ordering_key: str | None = None,
) -> Call[models.Event]:
    """Emit an event. Retrying with the same ``idempotency_key`` returns the same event;
    FIFO subscriptions get the events of one ``ordering_key`` one at a time, in order."""
    headers = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
    body = drop_none(type=type, payload=payload, metadata=metadata, ordering_key=ordering_key)
    return Call("POST", path("events"), one(models.Event.from_dict), body=body, headers=headers)


def get_event(id: str) -> Call[models.Event]:
    """One event by id."""
    return Call("GET", path("events", id), one(models.Event.from_dict))


def list_events(
    type: str | Sequence[str] | None = None,
    limit: int | None = None,
    cursor: str | None = None,
    after: str | None = None,
) -> Call[models.Page[models.Event]]:
    """One page of events, oldest first; filter by one type or several.

    ``cursor`` is a previous page's ``next_cursor``; ``after`` resumes after an event id.
    """
    params = {"type": strings(type) or None, "limit": limit, "cursor": cursor, "after": after}
    return Call("GET", path("events"), paged(models.Event.from_dict), params=params)


def event_pages(
    type: str | Sequence[str] | None = None, limit: int | None = None, after: str | None = None
) -> Pages[models.Event]:
    """Every event, oldest first, fetched ``limit`` per request."""
    return Pages(lambda c: list_events(type, limit, cursor=c, after=None if c else after))


def event_deliveries(id: str) -> Call[list[models.Attempt]]:
    """Every delivery attempt for this event, oldest first."""
    return Call("GET", path("events", id, "deliveries"), many(models.Attempt.from_json))


def redeliver_event(id: str, subscription_id: str | None = None) -> Call[models.Redelivery]:
    """Queue the event again, for one subscription or every one that matches it now."""
    body = drop_none(subscription_id=subscription_id)
    return Call(
        "POST", path("events", id, "redeliver"), one(models.Redelivery.from_json), body=body
    )


# Subscriptions

SUBSCRIPTIONS = ("webhooks", "subscriptions")


Scheme = Literal["hmac", "ed25519", "hmac-body", "rsa-sha256"]


class RetryPolicy(TypedDict, total=False):
    """A subscription's own retry rules, in the API's words (see the server's docs)."""

    delays: Sequence[float]
    retryOn: Sequence[Literal["timeout", "connection", "408", "429", "5xx", "4xx", "3xx"]]
    breakerThreshold: int


class SubscriptionChanges(TypedDict, total=False):
    """What ``subscriptions.update`` may change; a key left out stays as it is."""

    url: str
    event_types: str | Sequence[str]
    enabled: bool
    description: str | None
    max_concurrency: int | None
    rate_limit: float | None
    ordering: Literal["fifo"] | None
    verify_endpoint: bool
    retry_policy: RetryPolicy | None
    headers: Mapping[str, str] | None
    propagate_trace: bool
    filter: Mapping[str, Any] | None
    transformation: str | None


def subscription_body(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A create's or an update's JSON body: camelCase keys, ``event_types`` as a list,
    mappings (``filter``, ``headers``, ``retry_policy``) as plain dicts."""
    return {models.camel(name): subscription_value(name, value) for name, value in fields.items()}


def subscription_value(name: str, value: Any) -> Any:
    if name == "event_types":
        return strings(value)
    return dict(value) if isinstance(value, Mapping) else value


def create_subscription(
    url: str,
    event_types: str | Sequence[str],
    enabled: bool = True,
    description: str | None = None,
    signing_secret: str | None = None,
    max_concurrency: int | None = None,
    rate_limit: float | None = None,
    signature_scheme: Scheme = "hmac",
    verify_endpoint: bool | None = None,
    ordering: Literal["fifo"] | None = None,
    retry_policy: RetryPolicy | None = None,
    headers: Mapping[str, str] | None = None,
    propagate_trace: bool | None = None,
    filter: Mapping[str, Any] | None = None,
    transformation: str | None = None,
) -> Call[models.CreatedSubscription]:
    """Create a subscription; the result's ``signing_secret`` is shown only this once.
    ``headers`` go with every delivery (stored encrypted; read back as names); only
    events that pass ``filter`` are delivered (e.g. ``{"payload.amount": {"$gte": 1000}}``);
    ``transformation`` (JavaScript ``function handler(webhook)``) reshapes, redirects or
    cancels each delivery before it is signed."""
    # The first statement, so that locals() holds the arguments and nothing else. Each
    # is a field of the request body: a parameter that is not must be left out here.
    body = subscription_body({k: v for k, v in locals().items() if v is not None})
    return Call("POST", path(*SUBSCRIPTIONS), one(models.CreatedSubscription.from_json), body=body)


def get_subscription(id: str) -> Call[models.Subscription]:
    """One subscription by id."""
    return Call("GET", path(*SUBSCRIPTIONS, id), one(models.Subscription.from_json))


def list_subscriptions(
    limit: int | None = None, cursor: str | None = None
) -> Call[models.Page[models.Subscription]]:
    """One page of subscriptions."""
    params = {"limit": limit, "cursor": cursor}
    return Call("GET", path(*SUBSCRIPTIONS), paged(models.Subscription.from_json), params=params)


def subscription_pages(limit: int | None = None) -> Pages[models.Subscription]:
    """Every subscription."""
    return Pages(lambda cursor: list_subscriptions(limit, cursor))


def update_subscription(
    id: str, **changes: Unpack[SubscriptionChanges]
) -> Call[models.Subscription]:
    """Change some fields; ``enabled=True`` also resets the circuit breaker, ``filter=None``
    removes the filter."""
    body = subscription_body(changes)
    return Call("PATCH", path(*SUBSCRIPTIONS, id), one(models.Subscription.from_json), body=body)


def delete_subscription(id: str) -> Call[None]:
    """Delete a subscription."""
    return Call("DELETE", path(*SUBSCRIPTIONS, id), nothing)


def test_subscription(
    id: str, event_type: str, use_sample_payload: bool = True
) -> Call[models.TestResult]:
    """Send one signed test event now and report the receiver's answer."""
    body = drop_none(event_type=event_type, use_sample_payload=use_sample_payload)
    return Call(
        "POST", path(*SUBSCRIPTIONS, id, "test"), one(models.TestResult.from_json), body=body
    )


def rotate_secret(id: str, signing_secret: str | None = None) -> Call[models.CreatedSubscription]:
    """A new signing secret (returned only here); the old one signs too for a grace period."""
    body = drop_none(signing_secret=signing_secret)
    parse = one(models.CreatedSubscription.from_json)
    return Call("POST", path(*SUBSCRIPTIONS, id, "rotate-secret"), parse, body=body)


def end_rotation(id: str) -> Call[models.Subscription]:
    """End the last rotation's grace period now: only the new secret signs from here on."""
    return Call(
        "POST", path(*SUBSCRIPTIONS, id, "end-rotation"), one(models.Subscription.from_json)
    )


def verify_subscription(id: str) -> Call[models.Subscription]:
    """Send ``endpoint.verify`` again; a subscription waiting for it is enabled on 2xx."""
    return Call("POST", path(*SUBSCRIPTIONS, id, "verify"), one(models.Subscription.from_json))


def subscription_deliveries(
    id: str, status: Status | None = None, limit: int | None = None, cursor: str | None = None
) -> Call[models.Page[models.Attempt]]:
    """One page of the delivery log, newest first; ``status``: succeeded or failed."""
    params = {"status": status, "limit": limit, "cursor": cursor}
    parse = paged(models.Attempt.from_json)
    return Call("GET", path(*SUBSCRIPTIONS, id, "deliveries"), parse, params=params)


def delivery_pages(
    id: str, status: Status | None = None, limit: int | None = None
) -> Pages[models.Attempt]:
    """The whole delivery log, newest first."""
    return Pages(lambda cursor: subscription_deliveries(id, status, limit, cursor))


# Transformations


def test_transformation(
    script: str,
    event_type: str,
    payload: Mapping[str, Any] | None = None,
    url: str | None = None,
) -> Call[models.TransformationResult]:
    """Run a transformation script once on the envelope a test send of ``event_type``
    would carry (the catalog's sample payload, or ``payload``); nothing is sent. A script
    that fails raises ``TidingsError`` (422, ``transformation_failed``) whose ``details``
    give the message, kind and line."""
    body = drop_none(
        script=script,
        event_type=event_type,
        payload=dict(payload) if payload is not None else None,
        url=url,
    )
    parse = one(models.TransformationResult.from_json)
    return Call("POST", path("transformations", "test"), parse, body=body)


# Filters


def test_filter(filter: Mapping[str, Any], envelope: Mapping[str, Any]) -> Call[bool]:
    """Whether ``envelope`` passes ``filter``, as the server's fan-out decides it (a
    ``TidingsError`` with status 422 names the path and operator of an invalid filter)."""
    body = {"filter": dict(filter), "envelope": dict(envelope)}
    return Call("POST", path("filters", "test"), matched, body=body)


def matched(response: httpx.Response) -> bool:
    answer = response.json()["matches"]
    if not isinstance(answer, bool):
        raise TypeError("matches is not a boolean")
    return answer


# Event types


def list_event_types() -> Call[list[models.EventType]]:
    """The event-type catalog."""
    return Call("GET", path("event-types"), many(models.EventType.from_json))


def get_event_type(name: str) -> Call[models.EventType]:
    """One catalog entry (names are case-insensitive)."""
    return Call("GET", path("event-types", name), one(models.EventType.from_json))


# REST Hooks


def subscribe_hook(target_url: str, event: str) -> Call[str]:
    """Register a REST Hook (the Zapier convention); returns its id."""
    body = {"hookUrl": target_url, "event": event}
    return Call("POST", path("hooks"), lambda response: str(response.json()["id"]), body=body)


def unsubscribe_hook(id: str) -> Call[None]:
    """Remove a REST Hook."""
    return Call("DELETE", path("hooks", id), nothing)


def hook_samples(event_type: str) -> Call[list[dict[str, Any]]]:
    """Recent envelopes of this type, newest first (the catalog sample if there are none)."""
    return Call("GET", path("hooks", "samples", event_type), many(dict))
