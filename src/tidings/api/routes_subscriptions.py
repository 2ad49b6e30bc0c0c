"""Webhook subscriptions: CRUD, test sends and the delivery log."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Response

from tidings.api.auth import TidingsDep, WebhooksReader, WebhooksWriter
from tidings.api.pagination import decode_cursor, set_next_cursor
from tidings.api.schemas import (
    Attempt,
    CreatedSubscription,
    CreateSubscription,
    Recover,
    Recovered,
    RetryPolicyBody,
    RotateSecret,
    SubscriptionOut,
    TestDelivery,
    TestDeliveryResult,
    UpdateSubscription,
    Verified,
)
from tidings.domain.subscriptions import Ordering, Subscription
from tidings.service import SendReport, Tidings
from tidings.storage import ApiKey
from tidings.web.errors import ApiError, not_found, or_not_found

router = APIRouter(prefix="/api/v1/webhooks/subscriptions", tags=["subscriptions"])

EDITABLE = (
    "url",
    "event_types",
    "enabled",
    "description",
    "max_concurrency",
    "rate_limit",
    "ordering",
    "signature_scheme",
    "headers",
    "propagate_trace",
    "filter",
    "transformation",
)


async def owned(tidings: Tidings, key: ApiKey, subscription_id: str) -> Subscription:
    sub = await tidings.store.subscriptions.get(key.tenant_id, subscription_id)
    return or_not_found(sub, "subscription")


@router.post("", status_code=201, response_model=CreatedSubscription)
async def create_subscription(
    request: CreateSubscription, key: WebhooksWriter, tidings: TidingsDep
) -> CreatedSubscription:
    """Create a subscription. ``signingSecret`` is generated if absent and shown only here."""
    sub, secret = await tidings.create_subscription(
        key.tenant_id,
        request.url,
        request.event_types,
        enabled=request.enabled,
        description=request.description,
        signing_secret=request.signing_secret,
        max_concurrency=request.max_concurrency,
        rate_limit=request.rate_limit,
        ordering=Ordering(request.ordering) if request.ordering else None,
        signature_scheme=request.signature_scheme,
        awaiting_verification=request.enabled and wants_verification(tidings, request),
        retry_policy=retry_policy(request.retry_policy),
        headers=request.headers,
        propagate_trace=request.propagate_trace,
        filter=request.filter,
        transformation=request.transformation,
    )
    sub, verification = await verify_if_waiting(tidings, sub)
    return CreatedSubscription(
        **SubscriptionOut.of(sub).model_dump(),
        signing_secret=secret,
        verification=verification,
    )


def retry_policy(body: RetryPolicyBody | None) -> dict[str, Any] | None:
    return body.model_dump(by_alias=True, exclude_none=True) if body is not None else None


def result_out(result: SendReport) -> TestDeliveryResult:
    """The reply is the report, field for field."""
    return TestDeliveryResult(**dataclasses.asdict(result))


def wants_verification(tidings: Tidings, request: CreateSubscription | UpdateSubscription) -> bool:
    if request.verify_endpoint is not None:
        return request.verify_endpoint
    return tidings.settings.verify_endpoints


async def verify_if_waiting(
    tidings: Tidings, sub: Subscription
) -> tuple[Subscription, TestDeliveryResult | None]:
    sub, result = await tidings.verify_if_waiting(sub)
    return sub, result_out(result) if result is not None else None


@router.get("", response_model=list[SubscriptionOut])
async def list_subscriptions(
    response: Response,
    key: WebhooksReader,
    tidings: TidingsDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> list[SubscriptionOut]:
    page = await tidings.store.subscriptions.page(key.tenant_id, decode_cursor("s", cursor), limit)
    set_next_cursor(response, "s", page.next_key)
    return [SubscriptionOut.of(s) for s in page.items]


@router.get("/{subscription_id}", response_model=SubscriptionOut)
async def get_subscription(
    subscription_id: str, key: WebhooksReader, tidings: TidingsDep
) -> SubscriptionOut:
    return SubscriptionOut.of(await owned(tidings, key, subscription_id))


@router.patch("/{subscription_id}", response_model=Verified)
async def update_subscription(
    subscription_id: str, request: UpdateSubscription, key: WebhooksWriter, tidings: TidingsDep
) -> Verified:
    """Edit url, eventTypes, enabled, description or any option (``filter: null``
    removes the filter; the next emit applies a new one). ``enabled: true`` resets the
    breaker.

    With endpoint verification on, a new url is disabled until it answers endpoint.verify.
    """
    sub = await owned(tidings, key, subscription_id)
    fields = request.model_fields_set
    changes: dict[str, Any] = {name: getattr(request, name) for name in EDITABLE if name in fields}
    for name in ("url", "event_types", "enabled", "signature_scheme", "propagate_trace"):
        if changes.get(name, True) is None:
            del changes[name]
    if "retry_policy" in fields:
        changes["retry_policy"] = retry_policy(request.retry_policy)
    edited = await tidings.edit_subscription(sub, changes, request.verify_endpoint)
    if edited is None:
        raise not_found("subscription")
    sub = edited
    sub, verification = await verify_if_waiting(tidings, sub)
    return Verified(**SubscriptionOut.of(sub).model_dump(), verification=verification)


@router.post("/{subscription_id}/verify", response_model=Verified)
async def verify_subscription(
    subscription_id: str, key: WebhooksWriter, tidings: TidingsDep
) -> Verified:
    """Send ``endpoint.verify`` again; a subscription waiting for it is enabled on 2xx."""
    sub = await owned(tidings, key, subscription_id)
    result = await tidings.verify_endpoint(sub)
    refreshed = await owned(tidings, key, subscription_id)
    verification = result_out(result)
    return Verified(**SubscriptionOut.of(refreshed).model_dump(), verification=verification)


@router.delete("/{subscription_id}", status_code=204)
async def delete_subscription(
    subscription_id: str, key: WebhooksWriter, tidings: TidingsDep
) -> Response:
    if not await tidings.store.subscriptions.delete(key.tenant_id, subscription_id):
        raise not_found("subscription")
    return Response(status_code=204)


@router.post("/{subscription_id}/rotate-secret", response_model=CreatedSubscription)
async def rotate_secret(
    subscription_id: str,
    key: WebhooksWriter,
    tidings: TidingsDep,
    request: Annotated[RotateSecret | None, Body()] = None,
) -> CreatedSubscription:
    """A new secret (shown only here); the old one keeps signing beside it for
    ``TIDINGS_SECRET_ROTATION_GRACE`` seconds, so receivers can switch without a gap."""
    sub = await owned(tidings, key, subscription_id)
    rotated, secret = await tidings.rotate_secret(sub, request.signing_secret if request else None)
    return CreatedSubscription(**SubscriptionOut.of(rotated).model_dump(), signing_secret=secret)


@router.post("/{subscription_id}/end-rotation", response_model=SubscriptionOut)
async def end_rotation(
    subscription_id: str, key: WebhooksWriter, tidings: TidingsDep
) -> SubscriptionOut:
    """End the grace period of the last rotation now: from here on only the new secret
    signs (for ``hmac-body`` and ``rsa-sha256``, which send one signature: the new one
    takes over from the old)."""
    sub = await owned(tidings, key, subscription_id)
    return SubscriptionOut.of(await tidings.end_rotation(sub))


@router.post("/{subscription_id}/test", response_model=TestDeliveryResult)
async def test_subscription(
    subscription_id: str, request: TestDelivery, key: WebhooksWriter, tidings: TidingsDep
) -> TestDeliveryResult:
    """Send one signed sample event now and report the receiver's answer."""
    sub = await owned(tidings, key, subscription_id)
    result = await tidings.test_delivery(sub, request.event_type, request.use_sample_payload)
    return result_out(result)


@router.post("/{subscription_id}/recover", status_code=202, response_model=Recovered)
async def recover_failed(
    subscription_id: str, request: Recover, key: WebhooksWriter, tidings: TidingsDep
) -> Recovered:
    """Queue again every failed delivery to this subscription of an event created since
    ``since``; their attempts start over. The subscription must be enabled."""
    sub = await owned(tidings, key, subscription_id)
    if not sub.enabled:
        raise ApiError(409, "conflict", "enable the subscription before recovering its deliveries")
    since_ms = int(request.since.timestamp() * 1000)
    return Recovered(
        queued=await tidings.store.reports.recover_failed(key.tenant_id, since_ms, sub.id)
    )


@router.get("/{subscription_id}/deliveries", response_model=list[Attempt])
async def subscription_deliveries(
    subscription_id: str,
    response: Response,
    key: WebhooksReader,
    tidings: TidingsDep,
    status: Literal["succeeded", "failed", "cancelled"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> list[Attempt]:
    """The delivery log, newest first, optionally only succeeded, failed or cancelled attempts."""
    sub = await owned(tidings, key, subscription_id)
    page = await tidings.store.subscriptions.attempts(
        key.tenant_id, sub.id, status, decode_cursor("a", cursor), limit
    )
    set_next_cursor(response, "a", page.next_key)
    return [Attempt.of(a) for a in page.items]
