"""What the stores hand back and take: plain frozen records, no database types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from tidings.domain.deliveries import AttemptResult, Verdict

T = TypeVar("T")


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str


@dataclass(frozen=True)
class ApiKey:
    id: str
    tenant_id: str
    scopes: frozenset[str]


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    id: str
    tenant_id: str
    type: str
    created_ms: int
    body: str
    """The envelope JSON, byte for byte what receivers get."""
    request_hash: str | None = None


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_key: int | None
    """Opaque to callers: pass it back as ``after`` for the next page; None on the last."""


@dataclass(frozen=True)
class AttemptRecord:
    id: int
    delivery_id: int
    event_id: str
    subscription_id: str
    attempt: int
    outcome: str
    status_code: int | None
    elapsed_ms: int
    response_body: str
    error: str | None
    created_ms: int


@dataclass(frozen=True)
class DeliveryRecord:
    """One event's place in one subscription's queue."""

    id: int
    subscription_id: str
    status: str
    attempts: int
    due_ms: int
    last_status_code: int | None
    updated_ms: int


@dataclass(frozen=True)
class SubscriptionHealth:
    """A subscription's recent record, from its newest attempts."""

    attempts: int
    succeeded: int
    last_attempt_ms: int | None
    last_outcome: str | None
    last_status_code: int | None

    @property
    def success_rate(self) -> float | None:
        return self.succeeded / self.attempts if self.attempts else None


@dataclass(frozen=True)
class EventFilter:
    """What the portal's event browser narrows to; every field optional."""

    type: str | None = None
    subscription_id: str | None = None
    status: str | None = None
    """A delivery status: events with at least one delivery in it."""
    before_ms: int | None = None


@dataclass(frozen=True)
class EventSummary:
    event: StoredEvent
    statuses: dict[str, int]
    """Deliveries of the event, per status."""


@dataclass(frozen=True)
class ClaimedDelivery:
    """A due delivery leased to one worker until ``lease_until_ms``."""

    delivery_id: int
    claim_token: str
    attempt: int
    tenant_id: str
    event_id: str
    event_created_ms: int
    body: str
    subscription_id: str
    url: str
    secret_enc: str
    max_concurrency: int | None = None
    rate_limit: float | None = None
    previous_secret_enc: str | None = None
    """The secret before the last rotation, while its grace period lasts."""


@dataclass(frozen=True)
class AttemptOutcome:
    claimed: ClaimedDelivery
    result: AttemptResult
    verdict: Verdict
    finished_ms: int
