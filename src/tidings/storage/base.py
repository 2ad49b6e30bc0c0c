"""The storage interface every database connector implements, and the rows it returns."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import Connection

from tidings.domain.deliveries import AttemptResult, DisableReason, Verdict
from tidings.domain.subscriptions import Subscription

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
class Outcome:
    claimed: ClaimedDelivery
    result: AttemptResult
    verdict: Verdict
    finished_ms: int


def unbounded_room(_: str) -> int:
    return 1 << 30


class Outbox(Protocol):
    """Emits events inside a host application's transaction (see Store.in_transaction)."""

    def add(self, event: StoredEvent) -> StoredEvent:
        """Store ``event`` and queue its deliveries in the current transaction."""
        ...


class Store(Protocol):
    """Durable state. Every method is one transaction; tenant ids scope every read."""

    async def migrate(self) -> None: ...
    async def close(self) -> None: ...

    # tenants and keys
    async def ensure_tenant(self, name: str) -> Tenant: ...
    async def insert_api_key(
        self, tenant_id: str, key_hash: str, prefix: str, scopes: Sequence[str]
    ) -> ApiKey: ...
    async def get_tenant(self, tenant_id: str) -> Tenant | None: ...
    async def find_tenant(self, name: str) -> Tenant | None: ...
    async def find_api_key(self, key_hash: str) -> ApiKey | None: ...
    async def count_api_keys(self, tenant_id: str) -> int: ...

    # events
    async def insert_event(
        self, event: StoredEvent, idempotency_key: str | None
    ) -> tuple[StoredEvent, bool]:
        """Store the event and fan it out to matching enabled subscriptions, atomically.

        Returns the stored event and whether it was new; an existing event with the same
        idempotency key is returned unchanged (created=False).
        """
        ...

    async def in_transaction(self, work: Callable[[Connection, Outbox], T]) -> T:
        """Run the host application's ``work`` in one write transaction with an outbox:
        rows it writes on ``conn`` and events it emits through the outbox commit together,
        or not at all (the transactional outbox)."""
        ...

    async def get_event(self, tenant_id: str, event_id: str) -> StoredEvent | None: ...
    async def list_events(
        self, tenant_id: str, types: Sequence[str], after: int | None, limit: int
    ) -> Page[StoredEvent]: ...
    async def event_type_seen(self, tenant_id: str, event_type: str) -> bool: ...
    async def recent_events(self, tenant_id: str, event_type: str, limit: int) -> list[StoredEvent]:
        """The newest events of one type, newest first."""
        ...

    async def event_attempts(self, tenant_id: str, event_id: str) -> list[AttemptRecord]: ...
    async def enqueue(self, event: StoredEvent, subscription_ids: Sequence[str]) -> int: ...

    # subscriptions
    async def insert_subscription(self, subscription: Subscription, secret_enc: str) -> None: ...
    async def get_subscription(
        self, tenant_id: str, subscription_id: str
    ) -> Subscription | None: ...
    async def list_subscriptions(
        self, tenant_id: str, after: int | None, limit: int
    ) -> Page[Subscription]: ...
    async def matching_subscriptions(
        self, tenant_id: str, event_type: str
    ) -> list[Subscription]: ...
    async def update_subscription(
        self, tenant_id: str, subscription_id: str, changes: Mapping[str, Any]
    ) -> Subscription | None: ...
    async def delete_subscription(self, tenant_id: str, subscription_id: str) -> bool: ...
    async def subscription_secrets(self, tenant_id: str, subscription_id: str) -> list[str]:
        """Encrypted secrets that sign now: the current one, then one in its grace period."""
        ...

    async def rotate_secret(
        self,
        tenant_id: str,
        subscription_id: str,
        secret_enc: str,
        public_key: str | None,
        grace_until_ms: int,
    ) -> Subscription | None:
        """Make ``secret_enc`` current; the old one keeps signing until ``grace_until_ms``."""
        ...

    async def subscription_attempts(
        self,
        tenant_id: str,
        subscription_id: str,
        outcome: str | None,
        before: int | None,
        limit: int,
    ) -> Page[AttemptRecord]: ...

    # reports (the portal) and recovery
    async def subscription_health(
        self, tenant_id: str, subscription_ids: Sequence[str], sample: int
    ) -> dict[str, SubscriptionHealth]:
        """For each subscription, its newest ``sample`` attempts summed up."""
        ...

    async def browse_events(
        self, tenant_id: str, where: EventFilter, before: int | None, limit: int
    ) -> Page[EventSummary]:
        """Events newest first, with their delivery statuses; ``before`` is a page key."""
        ...

    async def event_deliveries(self, tenant_id: str, event_id: str) -> list[DeliveryRecord]: ...

    async def attempt_histogram(
        self, tenant_id: str, since_ms: int, bucket_ms: int
    ) -> list[tuple[int, str, int]]:
        """Attempts since ``since_ms`` as (bucket start, outcome, count), oldest first."""
        ...

    async def recover_failed(
        self, tenant_id: str, since_ms: int, subscription_id: str | None
    ) -> int:
        """Queue again every failed delivery of an event created since ``since_ms`` (to
        enabled subscriptions only); returns how many. Attempts start over at 1."""
        ...

    # the dispatcher's queue
    async def claim_due(
        self, limit: int, lease_ms: int, now_ms: int, room: Callable[[str], int] = unbounded_room
    ) -> list[ClaimedDelivery]:
        """Lease up to ``limit`` due deliveries, at most ``room(subscription_id)`` of each.

        Leasing pushes the due time past the lease, so a worker that dies lets the lease
        run out and the row is due again. The oldest due rows are scanned (with SKIP LOCKED
        where the database has it) so one subscription's backlog neither crowds out the
        others nor gets claimed only to be handed back.
        """
        ...

    async def release(self, deferrals: Sequence[tuple[ClaimedDelivery, int]]) -> None:
        """Give claimed deliveries back unattempted, due again at the given epoch ms."""
        ...

    async def record_outcomes(self, outcomes: Sequence[Outcome]) -> dict[str, int]:
        """Log attempts and move deliveries on; returns failure streaks of failing subscriptions.

        Only the holder of the claim moves a delivery on: a worker whose lease ran out (and
        whose delivery another worker took over) logs its attempt but changes nothing.
        """
        ...

    async def disable_subscription(
        self, tenant_id: str, subscription_id: str, reason: DisableReason
    ) -> Subscription | None:
        """Disable if enabled and cancel its pending deliveries; None if nothing changed."""
        ...

    async def queue_state(self, now_ms: int) -> tuple[int, int | None]:
        """Pending deliveries, and the due time of the oldest one that is due now."""
        ...

    async def delivery_counts(self) -> dict[str, int]:
        """Deliveries per status, across tenants (for operators, benchmarks and tests)."""
        ...

    # retention
    async def prune_response_bodies(self, before_ms: int, batch: int) -> int:
        """Blank the logged response bodies of up to ``batch`` attempts older than the cutoff."""
        ...

    async def prune_events(self, before_ms: int, batch: int) -> int:
        """Delete up to ``batch`` old events with nothing pending, with their deliveries and log."""
        ...

    def notify_work(self) -> None:
        """Wake waiting dispatchers: new deliveries are due."""
        ...

    async def wait_for_work(self, seconds: float) -> None: ...
