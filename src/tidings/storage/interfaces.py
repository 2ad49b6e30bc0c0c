"""What storage offers, split by who uses it. Every method is one transaction, and tenant
ids scope every read a tenant can cause.

* ``KeyStore``: tenants and API keys (the API's authentication, the CLI).
* ``SessionStore``: the portal's signed-in browsers.
* ``EventStore`` and ``SubscriptionStore``: the HTTP API and the service.
* ``DeliveryQueue``: the dispatcher, and nothing else.
* ``Reports``: the portal's read models and bulk recovery.
* ``Retention``: pruning old rows.
* ``AppTransactions``: host applications that write their own rows and emit events in
  one transaction (the transactional outbox). It is the only interface that hands out a
  database type: a SQLAlchemy ``Connection``, documented as such for apps.

``Store`` bundles one of each for one database.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from tidings.domain.deliveries import DisableReason
from tidings.domain.subscriptions import Subscription
from tidings.storage.records import (
    ApiKey,
    ApiKeyInfo,
    AttemptOutcome,
    AttemptRecord,
    ClaimedDelivery,
    ClaimRequest,
    DeliveryRecord,
    EventFilter,
    EventSummary,
    LaneFigures,
    Page,
    PortalSession,
    Revoked,
    SecretRotation,
    StoredEvent,
    SubscriptionHealth,
    Tenant,
    WorkerLane,
)

if TYPE_CHECKING:
    from sqlalchemy import Connection

T = TypeVar("T")


AppWork = Callable[["Connection", "Outbox"], T]
"""What an app runs in :meth:`AppTransactions.in_transaction`: synchronous, given a
SQLAlchemy ``Connection`` and the outbox."""


class Outbox(Protocol):
    """Emits events inside a host application's transaction (see AppTransactions)."""

    def add(self, event: StoredEvent) -> StoredEvent:
        """Store ``event`` and queue its deliveries in the current transaction."""
        ...


class KeyStore(Protocol):
    async def ensure_tenant(self, name: str) -> Tenant: ...
    async def get_tenant(self, tenant_id: str) -> Tenant | None: ...
    async def find_tenant(self, name: str) -> Tenant | None: ...
    async def insert_api_key(
        self, tenant_id: str, key_hash: str, prefix: str, scopes: Sequence[str]
    ) -> ApiKey: ...
    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        """The unrevoked key with this hash."""
        ...

    async def count_api_keys(self, tenant_id: str) -> int: ...
    async def list_api_keys(self, tenant_id: str) -> list[ApiKeyInfo]:
        """Every key of the tenant, revoked ones too, oldest first."""
        ...

    async def get_api_key(self, tenant_id: str, key_id: str) -> ApiKeyInfo | None: ...
    async def revoke_api_key(
        self, key_id: str, tenant_id: str | None, now_ms: int, keep_last_admin: bool
    ) -> Revoked:
        """Revoke the key and delete its portal sessions, in one transaction.

        ``tenant_id`` scopes the lookup (another tenant's key is NOT_FOUND); None is the
        operator's CLI, for any tenant. With ``keep_last_admin`` the tenant's only
        unrevoked admin key is refused (LAST_ADMIN), so a tenant cannot lock itself out
        through the API; the check and the revocation are serialised per tenant, so two
        admin keys revoking each other cannot both succeed. Revoking twice is
        ALREADY_REVOKED and changes nothing.
        """
        ...


class SessionStore(Protocol):
    """The portal's sessions: one row per signed-in browser, looked up on every request,
    so signing out or revoking the key ends a session on every server at once."""

    async def open_session(self, session: PortalSession) -> None: ...
    async def find_session(self, session_id: str, now_ms: int) -> PortalSession | None:
        """The session if it exists, has not expired, and its key (for an operator's
        session) is not revoked."""
        ...

    async def end_session(self, session_id: str) -> bool:
        """Delete the session; False if there was none."""
        ...


class EventStore(Protocol):
    async def insert_event(
        self, event: StoredEvent, idempotency_key: str | None
    ) -> tuple[StoredEvent, bool]:
        """Store the event and fan it out to matching enabled subscriptions, atomically.

        Returns the stored event and whether it was new; an existing event with the same
        idempotency key is returned unchanged (created=False).
        """
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
    async def enqueue(self, event: StoredEvent, subscription_ids: Sequence[str]) -> int:
        """Queue ``event`` again for these subscriptions; returns how many."""
        ...


class AppTransactions(Protocol):
    async def in_transaction(self, work: AppWork[T]) -> T:
        """Run the host application's ``work`` in one write transaction with an outbox:
        rows it writes on ``conn`` (a SQLAlchemy Connection) and events it emits through
        the outbox commit together, or not at all (the transactional outbox)."""
        ...


class SubscriptionStore(Protocol):
    async def insert(
        self, subscription: Subscription, secret_enc: str, headers_enc: str | None = None
    ) -> None: ...
    async def get(self, tenant_id: str, subscription_id: str) -> Subscription | None: ...
    async def page(self, tenant_id: str, after: int | None, limit: int) -> Page[Subscription]: ...
    async def matching(self, tenant_id: str, event_type: str) -> list[Subscription]: ...
    async def update(
        self, tenant_id: str, subscription_id: str, changes: Mapping[str, Any]
    ) -> Subscription | None: ...
    async def delete(self, tenant_id: str, subscription_id: str) -> bool: ...
    async def secrets(self, tenant_id: str, subscription_id: str) -> list[str]:
        """Encrypted secrets that sign now: the current one, then one in its grace period."""
        ...

    async def headers(self, tenant_id: str, subscription_id: str) -> str | None:
        """The static headers (encrypted JSON), if it has any."""
        ...

    async def rotate_secret(
        self, tenant_id: str, subscription_id: str, rotation: SecretRotation
    ) -> Subscription | None:
        """Make ``rotation.secret_enc`` current; the old one keeps signing until
        ``rotation.grace_until_ms`` (with ``keep_previous``, the one already in its grace
        period does, for longer)."""
        ...

    async def attempts(
        self,
        tenant_id: str,
        subscription_id: str,
        outcome: str | None,
        before: int | None,
        limit: int,
    ) -> Page[AttemptRecord]:
        """The delivery log, newest first; ``before`` is a page key."""
        ...

    async def disable(
        self, tenant_id: str, subscription_id: str, reason: DisableReason
    ) -> Subscription | None:
        """Disable if enabled; None if nothing changed."""
        ...


class DeliveryQueue(Protocol):
    """Deliveries are rows with a due time, grouped in lanes (one per subscription).

    A claim looks at the lanes with due work, least recently served first, asks the
    request's ``plan`` how many to take from each, and leases them: the due time moves
    past the lease, so a worker that dies lets the lease run out and the row is due
    again. Cluster-wide limits (``maxConcurrency``, ``rateLimit``) are part of a lane's
    state in the database, so they hold for every worker together.
    """

    async def claim(self, request: ClaimRequest) -> list[ClaimedDelivery]: ...

    async def release(self, deferrals: Sequence[tuple[ClaimedDelivery, int]]) -> None:
        """Give claimed deliveries back unattempted, due again at the given epoch ms."""
        ...

    async def record(self, outcomes: Sequence[AttemptOutcome]) -> dict[str, int]:
        """Log attempts and move deliveries on; returns failure streaks of failing subscriptions.

        Only the holder of the claim moves a delivery on: a worker whose lease ran out (and
        whose delivery another worker took over) logs its attempt but changes nothing.
        Finishing a FIFO delivery lets the next one of its key go.
        """
        ...

    async def repair(self, now_ms: int) -> int:
        """Let go FIFO deliveries left waiting behind nothing (their predecessor's event was
        pruned, say), and wake lanes left idle with work (a process died between an emit's
        commit and its wake); returns how many. A safety net, run with retention."""
        ...

    async def report_lanes(
        self, worker_id: str, capacity: int, figures: Sequence[WorkerLane], now_ms: int
    ) -> None:
        """Publish this worker's in-flight figures (``Reports.lane_figures`` reads them)."""
        ...

    async def queue_state(self, now_ms: int) -> tuple[int, int | None]:
        """Pending deliveries, and the due time of the oldest one that is due now."""
        ...

    async def delivery_counts(self) -> dict[str, int]:
        """Deliveries per status, across tenants (for operators, benchmarks and tests)."""
        ...

    def notify_work(self) -> None:
        """Wake waiting dispatchers in this process: new deliveries are due."""
        ...

    async def wait_for_work(self, seconds: float) -> None:
        """Return when new work may be due (another process's too), or after ``seconds``."""
        ...

    def forget_work(self) -> bool:
        """Drop the notices of new work so far: a claim about to start finds all they
        announced (each is sent once its work is committed). True if there were any."""
        ...


class Reports(Protocol):
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

    async def lane_figures(
        self, tenant_id: str | None, subscription_ids: Sequence[str] | None, top: int
    ) -> list[LaneFigures]:
        """Backlog, paused, in flight and slot share of subscriptions (all of them, or the
        given ones), largest backlog first, at most ``top``."""
        ...


class Retention(Protocol):
    async def prune_response_bodies(self, before_ms: int, batch: int) -> int:
        """Blank the logged response bodies of up to ``batch`` attempts older than the cutoff."""
        ...

    async def prune_events(self, before_ms: int, batch: int) -> int:
        """Delete up to ``batch`` old events with nothing pending, with their deliveries and log."""
        ...

    async def prepare_partitions(self, rows: int) -> int:
        """Create the partitions the next rows go to, ``rows`` keys each; returns how many
        were made (0 where tables are not partitioned)."""
        ...

    async def partition_headroom(self) -> dict[str, int]:
        """Per partitioned table, the keys handed out before rows land in its DEFAULT
        partition (an operator's alert: upkeep is failing); empty where none is."""
        ...

    async def drop_partitions(self, before_ms: int) -> int:
        """Drop whole partitions of rows ``prune_events`` would delete, before it runs;
        returns how many were dropped (0 where tables are not partitioned)."""
        ...

    async def prune_sessions(self, before_ms: int, batch: int) -> int:
        """Delete up to ``batch`` portal sessions that expired before the cutoff."""
        ...


class Unpartitioned:
    """``Retention``'s partition methods where tables are not partitioned."""

    async def prepare_partitions(self, rows: int) -> int:
        return 0

    async def drop_partitions(self, before_ms: int) -> int:
        return 0

    async def partition_headroom(self) -> dict[str, int]:
        return {}


class Store(Protocol):
    """One database, seen through each interface."""

    @property
    def keys(self) -> KeyStore: ...
    @property
    def sessions(self) -> SessionStore: ...
    @property
    def events(self) -> EventStore: ...
    @property
    def apps(self) -> AppTransactions: ...
    @property
    def subscriptions(self) -> SubscriptionStore: ...
    @property
    def queue(self) -> DeliveryQueue: ...
    @property
    def reports(self) -> Reports: ...
    @property
    def retention(self) -> Retention: ...

    async def migrate(self) -> None: ...
    async def ping(self) -> None:
        """Raise StorageUnavailable unless the database answers."""
        ...

    async def close(self) -> None: ...
