"""What the stores hand back and take: plain frozen records, no database types."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from tidings.domain.deliveries import AttemptResult, Verdict
from tidings.domain.retry import RetryRules
from tidings.domain.scheduling import Lane
from tidings.domain.signatures import SignatureScheme

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
class ApiKeyInfo:
    """What may be shown of a key: never the key itself or its hash."""

    id: str
    tenant_id: str
    prefix: str
    """The key's first characters (``tdg_`` and 8 more), to tell keys apart."""
    scopes: frozenset[str]
    created_ms: int
    revoked_ms: int | None


class Revocation(StrEnum):
    REVOKED = "revoked"
    ALREADY_REVOKED = "already_revoked"
    NOT_FOUND = "not_found"
    LAST_ADMIN = "last_admin"
    """Refused: the tenant's only unrevoked admin key (see ``KeyStore.revoke_api_key``)."""


@dataclass(frozen=True)
class Revoked:
    outcome: Revocation
    key: ApiKeyInfo | None
    """The key as it is now; None if there is no such key (for this tenant)."""
    sessions_ended: int = 0


@dataclass(frozen=True)
class PortalSession:
    """A signed-in portal browser: an operator's (``key_id`` set) or a consumer link's."""

    id: str
    """The SHA-256 of the random token in the signed cookie, so the table opens nothing."""
    tenant_id: str
    key_id: str | None
    """The admin API key an operator signed in with; None for a consumer link's session."""
    can_manage: bool
    created_ms: int
    expires_ms: int


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
    ordering_key: str | None = None
    """FIFO subscriptions deliver the events of one key one at a time, in order."""
    trace_context: str | None = None
    """The W3C ``traceparent`` of the span that stored it (tracing on), so the attempts,
    in whichever process, join the event's trace."""


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_key: int | None
    """Opaque to callers: pass it back as ``after`` for the next page; None on the last."""


@dataclass(frozen=True)
class SecretRotation:
    """A subscription's new current secret (``SubscriptionStore.rotate_secret``)."""

    secret_enc: str
    public_key: str | None
    grace_until_ms: int
    """The secret it replaces keeps signing until then."""
    keep_previous: bool = False
    """Replace the current secret but keep the one already in its grace period signing
    (for longer) instead: for schemes that send one signature, whose receivers hold it."""


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
class ClaimRequest:
    """What a worker asks of the queue: ``plan`` gets the lanes with due work and says
    how many to take from each (``Scheduler.plan``, frozen for this call)."""

    now_ms: int
    lease_ms: int
    plan: Callable[[Sequence[Lane]], Mapping[str, int]]
    skip: Sequence[str] = ()
    """Subscriptions this worker can take no more of now."""
    lanes: int = 256
    """At most this many lanes are looked at, least recently served first."""


@dataclass(frozen=True)
class ClaimedDelivery:
    """A due delivery leased to one worker (``claim_token``) until its lease runs out."""

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
    ordering_key: str | None = None
    """Set on deliveries of FIFO subscriptions: finishing one lets the next of its key go."""
    paused_ms: int = 0
    signature_scheme: SignatureScheme = SignatureScheme.HMAC
    retry: RetryRules | None = None
    """The subscription's own retry policy, if it has one."""
    headers_enc: str | None = None
    """The subscription's static headers (encrypted JSON), if any."""
    trace_context: str | None = None
    """The event's ``traceparent`` (see ``StoredEvent.trace_context``)."""
    propagate_trace: bool = False
    """The subscription's ``propagateTrace``: send a ``traceparent`` header."""
    event_type: str = ""
    transformation: str | None = None
    """The subscription's JavaScript ``transformation``, run before signing."""

    @property
    def window_start_ms(self) -> int:
        """The retry window counts from the event, not counting time spent paused."""
        return self.event_created_ms + self.paused_ms


@dataclass(frozen=True)
class WorkerLane:
    """What one worker holds of one subscription now."""

    subscription_id: str
    tenant_id: str
    in_flight: int
    slot_limit: int


@dataclass(frozen=True)
class LaneFigures:
    """One subscription's place in the scheduler, for operators (portal, /metrics)."""

    subscription_id: str
    tenant_id: str
    backlog: int
    """Deliveries pending (due now or later, in flight included)."""
    paused: int
    in_flight: int
    """Attempts in flight now, over every worker that reported in the last minute."""
    slot_limit: int
    """The adaptive limit, summed over those workers."""
    share: float
    """Its in-flight attempts as a fraction of those workers' slots."""


@dataclass(frozen=True)
class AttemptOutcome:
    claimed: ClaimedDelivery
    result: AttemptResult
    verdict: Verdict
    finished_ms: int
