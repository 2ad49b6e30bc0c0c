"""What the API returns, as frozen dataclasses with snake_case fields.

Each model's ``from_json`` maps the API's camelCase keys to its fields; keys it does not
know are ignored, so a newer server does not break an older client. ``Event`` is the
receiver's own envelope type, so a polled event and a delivered one are the same value.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import MISSING, dataclass, fields
from datetime import UTC, datetime
from typing import Any, Generic, Literal, Self, TypeVar

from tidings.receiver.events import Event

__all__ = [
    "Attempt",
    "CreatedSubscription",
    "Event",
    "EventType",
    "Page",
    "Redelivery",
    "Subscription",
    "TestResult",
    "TransformationResult",
]

T = TypeVar("T")


def camel(name: str) -> str:
    """``created_utc`` -> ``createdUtc``."""
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def parse_utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True, kw_only=True)
class Model:
    """Base of the API's objects: ``*_utc`` fields become aware datetimes."""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(**cls.values(data))

    @classmethod
    def values(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """Constructor arguments from the camelCase JSON object; KeyError if one is missing."""
        values: dict[str, Any] = {}
        for field in fields(cls):
            key = camel(field.name)
            if key not in data:
                if field.default is MISSING and field.default_factory is MISSING:
                    raise KeyError(key)
                continue
            value = data[key]
            if field.name.endswith("_utc") and value is not None:
                value = parse_utc(value)
            values[field.name] = value
        return values


@dataclass(frozen=True, kw_only=True)
class TestResult(Model):
    """The receiver's answer to a test send or an ``endpoint.verify``."""

    __test__ = False  # not a pytest test class

    success: bool
    status_code: int | None
    elapsed_ms: int
    response_body: str
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class Subscription(Model):
    """A webhook subscription; never carries its signing secret."""

    id: str
    url: str
    event_types: list[str]
    enabled: bool
    status: Literal["active", "disabled"]
    disabled_reason: str | None
    description: str | None
    kind: str
    consecutive_failures: int
    max_concurrency: int | None
    rate_limit: float | None
    ordering: Literal["fifo"] | None
    signature_scheme: Literal["hmac", "ed25519", "hmac-body", "rsa-sha256"]
    public_key: str | None
    """``whpk_`` key (ed25519) or PEM (rsa-sha256) that receivers verify with."""
    previous_public_key: str | None
    """During a rotation's grace period, the old key's public half (rsa-sha256: it signs)."""
    retry_policy: dict[str, Any] | None
    """Its own ``{delays, retryOn, breakerThreshold}``; None: the server's."""
    headers: list[str]
    """Names of its static headers; the values are never shown."""
    propagate_trace: bool = False
    """Deliveries carry a W3C ``traceparent`` header (the server traces with OpenTelemetry)."""
    filter: dict[str, Any] | None = None
    """Only events that pass it are delivered (MongoDB-style, on the envelope's paths)."""
    transformation: str | None = None
    """JavaScript ``function handler(webhook)`` run on each delivery before it is signed."""
    previous_secret_expires_utc: datetime | None
    created_utc: datetime
    updated_utc: datetime
    verification: TestResult | None = None
    """The ``endpoint.verify`` answer, on the responses that sent one."""

    @classmethod
    def values(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        values = super().values(data)
        if values.get("verification") is not None:
            values["verification"] = TestResult.from_json(values["verification"])
        return values


@dataclass(frozen=True, kw_only=True)
class CreatedSubscription(Subscription):
    """A subscription just created or rotated: the only time its secret is shown."""

    signing_secret: str | None
    """None for ``rsa-sha256``: its private key never leaves the server."""


@dataclass(frozen=True, kw_only=True)
class Attempt(Model):
    """One logged delivery attempt."""

    id: int
    event_id: str
    subscription_id: str
    attempt: int
    status: Literal["succeeded", "failed", "cancelled"]
    """``cancelled``: the subscription's transformation cancelled it (nothing was sent)."""
    status_code: int | None
    elapsed_ms: int
    response_body: str
    error: str | None
    created_utc: datetime


@dataclass(frozen=True, kw_only=True)
class EventType(Model):
    """A catalog entry."""

    name: str
    description: str
    schema: dict[str, Any]
    sample_payload: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class Redelivery(Model):
    """An event queued again, and the subscriptions it was queued for."""

    event_id: str
    subscription_ids: list[str]


@dataclass(frozen=True, kw_only=True)
class TransformationResult(Model):
    """A transformation's dry run: what its handler returned, and the body that would be
    sent (None when the handler cancelled the delivery: ``webhook["cancel"]`` is true)."""

    webhook: dict[str, Any]
    body: str | None

    @property
    def cancelled(self) -> bool:
        return self.webhook.get("cancel") is True


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list; pass ``next_cursor`` back for the next (None on the last)."""

    items: list[T]
    next_cursor: str | None

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)
