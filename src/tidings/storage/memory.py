"""Every storage interface in memory, on a clock you choose: for tests, not for production.

Like procrastinate's ``InMemoryConnector``, it lets the dispatcher, the scheduler and the
service be tested without a database, fast and on a fake clock. It keeps the same rules
as the SQL connectors (lanes, leases, FIFO keys, paused deliveries, cluster-wide limits):
``tests/storage/test_queue_contract.py`` runs one set of tests against all three.
Nothing is durable and nothing is shared between processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tidings.domain import filters
from tidings.domain.clock import SYSTEM_CLOCK, Clock
from tidings.domain.deliveries import DeliveryStatus, DisableReason
from tidings.domain.ids import new_id
from tidings.domain.scheduling import LaneState
from tidings.domain.subscriptions import Ordering, Subscription
from tidings.storage import records
from tidings.storage.interfaces import Outbox, Unpartitioned
from tidings.storage.rules import (
    TERMINAL,
    attempt_outcome,
    recorded_status,
    streak_changes,
    subscription_changes,
)

T = TypeVar("T")

PENDING = DeliveryStatus.PENDING.value
PAUSED = DeliveryStatus.PAUSED.value
CANCELLED = DeliveryStatus.CANCELLED.value
UNFINISHED = (PENDING, PAUSED)
LANE_STATS_TTL_MS = 60_000


@dataclass
class _Key:
    info: records.ApiKeyInfo
    key_hash: str

    @property
    def is_admin(self) -> bool:
        return self.info.revoked_ms is None and "admin" in self.info.scopes


@dataclass
class _Sub:
    subscription: Subscription
    secret_enc: str
    previous_secret_enc: str | None = None
    disabled_ms: int | None = None
    seq: int = 0
    headers_enc: str | None = None


@dataclass
class _Delivery:
    id: int
    tenant_id: str
    event_seq: int
    subscription_id: str
    status: str
    due_ms: int
    created_ms: int
    updated_ms: int
    attempts: int = 0
    claim_token: str | None = None
    last_status_code: int | None = None
    ordering_key: str | None = None
    position: int | None = None
    blocked: bool = False
    paused_ms: int = 0


@dataclass
class _Lane:
    subscription_id: str
    tenant_id: str
    next_due_ms: int | None = None
    served_ms: int = 0
    tokens: float | None = None
    tokens_ms: int | None = None


@dataclass
class _Data:
    """All rows; one lock serialises every transaction, as SQLite's single writer does."""

    clock: Clock
    tenants: dict[str, records.Tenant] = field(default_factory=dict)
    keys: dict[str, _Key] = field(default_factory=dict)
    """By key id."""
    sessions: dict[str, records.PortalSession] = field(default_factory=dict)
    events: dict[int, records.StoredEvent] = field(default_factory=dict)
    idempotency: dict[tuple[str, str], int] = field(default_factory=dict)
    subs: dict[str, _Sub] = field(default_factory=dict)
    deliveries: dict[int, _Delivery] = field(default_factory=dict)
    by_sub: dict[str, dict[int, _Delivery]] = field(default_factory=dict)
    lanes: dict[str, _Lane] = field(default_factory=dict)
    attempts: list[records.AttemptRecord] = field(default_factory=list)
    lane_stats: dict[tuple[str, str], tuple[records.WorkerLane, int, int]] = field(
        default_factory=dict
    )
    ids: Any = field(default_factory=lambda: itertools.count(1))
    work: asyncio.Event = field(default_factory=asyncio.Event)

    def now(self) -> int:
        return self.clock.now_ms()

    def sub_deliveries(self, sub_id: str) -> list[_Delivery]:
        return list(self.by_sub.get(sub_id, {}).values())

    def add_delivery(self, delivery: _Delivery) -> None:
        self.deliveries[delivery.id] = delivery
        self.by_sub.setdefault(delivery.subscription_id, {})[delivery.id] = delivery

    def drop_delivery(self, delivery: _Delivery) -> None:
        del self.deliveries[delivery.id]
        self.by_sub.get(delivery.subscription_id, {}).pop(delivery.id, None)

    def unfinished_of_key(self, sub_id: str, key: str) -> list[_Delivery]:
        found = [
            d
            for d in self.sub_deliveries(sub_id)
            if d.ordering_key == key and d.status in UNFINISHED
        ]
        return sorted(found, key=lambda d: (d.position or 0, d.id))

    def wake(self, sub_id: str, due_ms: int) -> None:
        lane = self.lanes.get(sub_id)
        if lane is not None and (lane.next_due_ms is None or lane.next_due_ms > due_ms):
            lane.next_due_ms = due_ms

    def join_line(self, delivery: _Delivery) -> None:
        """Put a FIFO delivery last in its key's line, blocked if any are ahead of it."""
        if delivery.ordering_key is None:
            return
        line = self.unfinished_of_key(delivery.subscription_id, delivery.ordering_key)
        delivery.blocked = bool(line)
        delivery.position = max((d.position or 0) for d in line) + 1 if line else 0

    def queue(self, event: records.StoredEvent, sub: _Sub, now: int) -> _Delivery:
        """As ``QUEUE_ROWS``: pending or paused; FIFO ones behind their key's last."""
        s = sub.subscription
        delivery = _Delivery(
            id=next(self.ids),
            tenant_id=event.tenant_id,
            event_seq=event.seq,
            subscription_id=s.id,
            status=PENDING if s.enabled else PAUSED,
            due_ms=now,
            created_ms=now,
            updated_ms=now,
            ordering_key=(event.ordering_key or "") if s.ordering is Ordering.FIFO else None,
        )
        self.join_line(delivery)
        self.add_delivery(delivery)
        if delivery.status == PENDING and not delivery.blocked:
            self.wake(s.id, now)
        return delivery

    def add_event(self, event: records.StoredEvent, key: str | None) -> records.StoredEvent:
        stored = dataclasses.replace(event, seq=next(self.ids))
        self.events[stored.seq] = stored
        if key is not None:
            self.idempotency[(event.tenant_id, key)] = stored.seq
        now = self.now()
        envelope = None
        for sub in self.subs.values():
            s = sub.subscription
            wanted = s.enabled or (s.disabled_reason is not None and s.disabled_reason.pauses)
            if not (s.tenant_id == event.tenant_id and wanted and s.wants(event.type)):
                continue
            if s.filter is not None:
                envelope = json.loads(stored.body) if envelope is None else envelope
                if not filters.matches(s.filter, envelope):
                    continue
            self.queue(stored, sub, now)
        return stored

    def let_next_go(self, sub_id: str, key: str) -> bool:
        line = self.unfinished_of_key(sub_id, key)
        if line and line[0].blocked:
            line[0].blocked = False
            return True
        return False


class MemoryStore(Unpartitioned):
    """A ``Store``: one object serves every interface (``keys``, ``events``, ...)."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._data = _Data(clock)
        self._lock = asyncio.Lock()

    # --- the bundle -----------------------------------------------------------------

    @property
    def keys(self) -> MemoryStore:
        return self

    events = apps = subscriptions = queue = reports = retention = sessions = keys

    async def migrate(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # --- keys -----------------------------------------------------------------------

    async def ensure_tenant(self, name: str) -> records.Tenant:
        found = await self.find_tenant(name)
        if found is not None:
            return found
        tenant = records.Tenant(new_id("ten"), name)
        self._data.tenants[tenant.id] = tenant
        return tenant

    async def get_tenant(self, tenant_id: str) -> records.Tenant | None:
        return self._data.tenants.get(tenant_id)

    async def find_tenant(self, name: str) -> records.Tenant | None:
        return next((t for t in self._data.tenants.values() if t.name == name), None)

    async def insert_api_key(
        self, tenant_id: str, key_hash: str, prefix: str, scopes: Sequence[str]
    ) -> records.ApiKey:
        key = records.ApiKey(new_id("key"), tenant_id, frozenset(scopes))
        info = records.ApiKeyInfo(key.id, tenant_id, prefix, key.scopes, self._data.now(), None)
        self._data.keys[key.id] = _Key(info, key_hash)
        return key

    async def find_api_key(self, key_hash: str) -> records.ApiKey | None:
        for k in self._data.keys.values():
            if k.key_hash == key_hash and k.info.revoked_ms is None:
                return records.ApiKey(k.info.id, k.info.tenant_id, k.info.scopes)
        return None

    async def count_api_keys(self, tenant_id: str) -> int:
        return sum(1 for k in self._data.keys.values() if k.info.tenant_id == tenant_id)

    async def list_api_keys(self, tenant_id: str) -> list[records.ApiKeyInfo]:
        found = [k.info for k in self._data.keys.values() if k.info.tenant_id == tenant_id]
        return sorted(found, key=lambda info: (info.created_ms, info.id))

    async def get_api_key(self, tenant_id: str, key_id: str) -> records.ApiKeyInfo | None:
        found = self._data.keys.get(key_id)
        return found.info if found is not None and found.info.tenant_id == tenant_id else None

    async def revoke_api_key(
        self, key_id: str, tenant_id: str | None, now_ms: int, keep_last_admin: bool
    ) -> records.Revoked:
        async with self._lock:
            found = self._data.keys.get(key_id)
            if found is None or tenant_id not in (None, found.info.tenant_id):
                return records.Revoked(records.Revocation.NOT_FOUND, None)
            if found.info.revoked_ms is not None:
                return records.Revoked(records.Revocation.ALREADY_REVOKED, found.info)
            admins = sum(
                1
                for k in self._data.keys.values()
                if k.info.tenant_id == found.info.tenant_id and k.is_admin
            )
            if keep_last_admin and found.is_admin and admins <= 1:
                return records.Revoked(records.Revocation.LAST_ADMIN, found.info)
            found.info = dataclasses.replace(found.info, revoked_ms=now_ms)
            ended = [s for s in self._data.sessions.values() if s.key_id == key_id]
            for session in ended:
                del self._data.sessions[session.id]
            return records.Revoked(records.Revocation.REVOKED, found.info, len(ended))

    # --- portal sessions --------------------------------------------------------------

    async def open_session(self, session: records.PortalSession) -> None:
        self._data.sessions[session.id] = session

    async def find_session(self, session_id: str, now_ms: int) -> records.PortalSession | None:
        session = self._data.sessions.get(session_id)
        if session is None or session.expires_ms <= now_ms:
            return None
        if session.key_id is not None:
            key = self._data.keys.get(session.key_id)
            if key is None or key.info.revoked_ms is not None:
                return None
        return session

    async def end_session(self, session_id: str) -> bool:
        return self._data.sessions.pop(session_id, None) is not None

    # --- events ---------------------------------------------------------------------

    async def insert_event(
        self, event: records.StoredEvent, idempotency_key: str | None
    ) -> tuple[records.StoredEvent, bool]:
        async with self._lock:
            if idempotency_key is not None:
                seq = self._data.idempotency.get((event.tenant_id, idempotency_key))
                if seq is not None:
                    return self._data.events[seq], False
            stored = self._data.add_event(event, idempotency_key)
        self.notify_work()
        return stored, True

    async def in_transaction(self, work: Callable[[Any, Outbox], T]) -> T:
        """Runs ``work`` with ``None`` for a connection: apps that write their own tables
        need a SQL store. Events added through the outbox are kept only if it returns."""
        added: list[records.StoredEvent] = []

        class _Outbox:
            def add(_, event: records.StoredEvent) -> records.StoredEvent:
                added.append(event)
                return event

        async with self._lock:
            result = work(None, _Outbox())
            for event in added:
                self._data.add_event(event, None)
        if added:
            self.notify_work()
        return result

    async def get_event(self, tenant_id: str, event_id: str) -> records.StoredEvent | None:
        return next(
            (
                e
                for e in self._data.events.values()
                if e.id == event_id and e.tenant_id == tenant_id
            ),
            None,
        )

    async def list_events(
        self, tenant_id: str, types: Sequence[str], after: int | None, limit: int
    ) -> records.Page[records.StoredEvent]:
        found = [
            e
            for seq, e in sorted(self._data.events.items())
            if e.tenant_id == tenant_id
            and (not types or e.type in types)
            and (after is None or seq > after)
        ]
        return _page(found, limit, lambda e: e.seq)

    async def event_type_seen(self, tenant_id: str, event_type: str) -> bool:
        return any(
            e.tenant_id == tenant_id and e.type == event_type for e in self._data.events.values()
        )

    async def recent_events(
        self, tenant_id: str, event_type: str, limit: int
    ) -> list[records.StoredEvent]:
        found = [
            e
            for e in self._data.events.values()
            if e.tenant_id == tenant_id and e.type == event_type
        ]
        return sorted(found, key=lambda e: -e.seq)[:limit]

    async def event_attempts(self, tenant_id: str, event_id: str) -> list[records.AttemptRecord]:
        tenant_events = {e.id for e in self._data.events.values() if e.tenant_id == tenant_id}
        return [
            a for a in self._data.attempts if a.event_id == event_id and a.event_id in tenant_events
        ]

    async def enqueue(self, event: records.StoredEvent, subscription_ids: Sequence[str]) -> int:
        async with self._lock:
            now = self._data.now()
            for sub_id in subscription_ids:
                sub = self._data.subs.get(sub_id)
                if sub is not None and sub.subscription.tenant_id == event.tenant_id:
                    self._data.queue(event, sub, now)
        self.notify_work()
        return len(subscription_ids)

    # --- subscriptions --------------------------------------------------------------

    async def insert(
        self, subscription: Subscription, secret_enc: str, headers_enc: str | None = None
    ) -> None:
        seq = next(self._data.ids)
        disabled = None if subscription.enabled else subscription.created_ms
        self._data.subs[subscription.id] = _Sub(
            subscription, secret_enc, None, disabled, seq, headers_enc
        )
        self._data.lanes[subscription.id] = _Lane(subscription.id, subscription.tenant_id)

    def _owned(self, tenant_id: str, subscription_id: str) -> _Sub | None:
        sub = self._data.subs.get(subscription_id)
        return sub if sub is not None and sub.subscription.tenant_id == tenant_id else None

    async def get(self, tenant_id: str, subscription_id: str) -> Subscription | None:
        sub = self._owned(tenant_id, subscription_id)
        return sub.subscription if sub is not None else None

    async def page(
        self, tenant_id: str, after: int | None, limit: int
    ) -> records.Page[Subscription]:
        found = sorted(
            (s for s in self._data.subs.values() if s.subscription.tenant_id == tenant_id),
            key=lambda s: s.seq,
        )
        found = [s for s in found if after is None or s.seq > after]
        page = _page(found, limit, lambda s: s.seq)
        return records.Page([s.subscription for s in page.items], page.next_key)

    async def matching(self, tenant_id: str, event_type: str) -> list[Subscription]:
        return [
            s.subscription
            for s in self._data.subs.values()
            if s.subscription.tenant_id == tenant_id
            and s.subscription.enabled
            and s.subscription.wants(event_type)
        ]

    async def update(
        self, tenant_id: str, subscription_id: str, changes: Mapping[str, Any]
    ) -> Subscription | None:
        async with self._lock:
            sub = self._owned(tenant_id, subscription_id)
            if sub is None:
                return None
            now = self._data.now()
            values = subscription_changes(changes)
            if "event_types" in values:
                values["event_types"] = tuple(values["event_types"])
            if "headers_enc" in values:
                sub.headers_enc = values.pop("headers_enc")
            if "previous_secret_enc" in values:
                sub.previous_secret_enc = values.pop("previous_secret_enc")
            was_enabled = sub.subscription.enabled
            sub.subscription = dataclasses.replace(sub.subscription, updated_ms=now, **values)
            if values.get("enabled") is True and not was_enabled:
                self._resume(sub, now)
            elif values.get("enabled") is False and was_enabled:
                sub.disabled_ms = now
                self._stop(subscription_id, values["disabled_reason"], now)
            return sub.subscription

    def _resume(self, sub: _Sub, now: int) -> None:
        paused_for = max(0, now - (sub.disabled_ms or now))
        sub.disabled_ms = None
        for d in self._data.sub_deliveries(sub.subscription.id):
            if d.status == PAUSED:
                d.status, d.due_ms = PENDING, now
                d.paused_ms += paused_for
                d.updated_ms = now
        self._data.lanes[sub.subscription.id].next_due_ms = now
        self.notify_work()

    def _stop(self, subscription_id: str, reason: DisableReason, now: int) -> None:
        for d in self._data.sub_deliveries(subscription_id):
            if reason.pauses and d.status == PENDING:
                d.status, d.claim_token, d.updated_ms = PAUSED, None, now
            elif not reason.pauses and d.status in UNFINISHED:
                d.status, d.claim_token, d.updated_ms = CANCELLED, None, now
        lane = self._data.lanes.get(subscription_id)
        if lane is not None:
            lane.next_due_ms = None

    async def delete(self, tenant_id: str, subscription_id: str) -> bool:
        async with self._lock:
            if self._owned(tenant_id, subscription_id) is None:
                return False
            del self._data.subs[subscription_id]
            self._stop(subscription_id, DisableReason.GONE, self._data.now())
            self._data.lanes.pop(subscription_id, None)
            return True

    async def secrets(self, tenant_id: str, subscription_id: str) -> list[str]:
        sub = self._owned(tenant_id, subscription_id)
        if sub is None:
            return []
        return [sub.secret_enc, *self._previous(sub)]

    async def headers(self, tenant_id: str, subscription_id: str) -> str | None:
        sub = self._owned(tenant_id, subscription_id)
        return sub.headers_enc if sub is not None else None

    def _previous(self, sub: _Sub) -> list[str]:
        expires = sub.subscription.previous_secret_expires_ms
        if sub.previous_secret_enc and expires is not None and expires > self._data.now():
            return [sub.previous_secret_enc]
        return []

    async def rotate_secret(
        self, tenant_id: str, subscription_id: str, rotation: records.SecretRotation
    ) -> Subscription | None:
        sub = self._owned(tenant_id, subscription_id)
        if sub is None:
            return None
        previous_key = sub.subscription.previous_public_key
        if not rotation.keep_previous:
            sub.previous_secret_enc = sub.secret_enc
            previous_key = sub.subscription.public_key
        sub.secret_enc = rotation.secret_enc
        sub.subscription = dataclasses.replace(
            sub.subscription,
            public_key=rotation.public_key,
            previous_public_key=previous_key,
            previous_secret_expires_ms=rotation.grace_until_ms,
            updated_ms=self._data.now(),
        )
        return sub.subscription

    async def attempts(
        self,
        tenant_id: str,
        subscription_id: str,
        outcome: str | None,
        before: int | None,
        limit: int,
    ) -> records.Page[records.AttemptRecord]:
        found = [
            a
            for a in reversed(self._data.attempts)
            if a.subscription_id == subscription_id
            and self._owned(tenant_id, subscription_id) is not None
            and (outcome is None or a.outcome == outcome)
            and (before is None or a.id < before)
        ]
        return _page(found, limit, lambda a: a.id)

    async def disable(
        self, tenant_id: str, subscription_id: str, reason: DisableReason
    ) -> Subscription | None:
        sub = self._owned(tenant_id, subscription_id)
        if sub is None or not sub.subscription.enabled:
            return None
        return await self.update(
            tenant_id, subscription_id, {"enabled": False, "disabled_reason": reason}
        )

    # --- the delivery queue ---------------------------------------------------------

    async def claim(self, request: records.ClaimRequest) -> list[records.ClaimedDelivery]:
        async with self._lock:
            return self._claim(request)

    def _claim(self, request: records.ClaimRequest) -> list[records.ClaimedDelivery]:
        data, now, token = self._data, request.now_ms, uuid.uuid4().hex
        due = [
            lane
            for lane in data.lanes.values()
            if lane.next_due_ms is not None
            and lane.next_due_ms <= now
            and data.subs[lane.subscription_id].subscription.enabled
            and lane.subscription_id not in request.skip
        ]
        due.sort(key=lambda lane: lane.served_ms)
        states = [self._lane_state(lane, now) for lane in due[: request.lanes]]
        plan = request.plan([state.lane(now) for state in states])
        taken: list[_Delivery] = []
        for state in states:
            wanted = plan.get(state.subscription_id, 0)
            claimable = sorted(
                (d for d in self._claimable(state.subscription_id) if d.due_ms <= now),
                key=lambda d: (d.due_ms, d.id),
            )[: max(0, wanted)]
            for d in claimable:
                d.due_ms, d.claim_token = now + request.lease_ms, token
            taken.extend(claimable)
            next_due = self._earliest_claimable(state.subscription_id)
            update = state.after_claim(len(claimable), now, next_due)
            lane = data.lanes[state.subscription_id]
            if update.served_ms is not None:
                lane.served_ms = update.served_ms
            lane.tokens, lane.tokens_ms, lane.next_due_ms = update.tokens, now, update.next_due_ms
        return [self._claimed(d, token, now) for d in taken]

    def _earliest_claimable(self, sub_id: str) -> int | None:
        return min((d.due_ms for d in self._claimable(sub_id)), default=None)

    def _claimable(self, sub_id: str) -> list[_Delivery]:
        return [
            d for d in self._data.sub_deliveries(sub_id) if d.status == PENDING and not d.blocked
        ]

    def _lane_state(self, lane: _Lane, now: int) -> LaneState:
        s = self._data.subs[lane.subscription_id].subscription
        leased = [
            d.due_ms
            for d in self._data.sub_deliveries(lane.subscription_id)
            if d.claim_token is not None and d.due_ms > now
        ]
        return LaneState(
            subscription_id=lane.subscription_id,
            tenant_id=lane.tenant_id,
            max_concurrency=s.max_concurrency,
            rate_limit=s.rate_limit,
            tokens=lane.tokens,
            tokens_ms=lane.tokens_ms,
            leased=len(leased) if s.max_concurrency is not None else 0,
            lease_ends_ms=min(leased, default=None) if s.max_concurrency is not None else None,
        )

    def _claimed(self, d: _Delivery, token: str, now: int) -> records.ClaimedDelivery:
        sub = self._data.subs[d.subscription_id]
        event = self._data.events[d.event_seq]
        return records.ClaimedDelivery(
            delivery_id=d.id,
            claim_token=token,
            attempt=d.attempts + 1,
            tenant_id=d.tenant_id,
            event_id=event.id,
            event_created_ms=event.created_ms,
            body=event.body,
            subscription_id=d.subscription_id,
            url=sub.subscription.url,
            secret_enc=sub.secret_enc,
            max_concurrency=sub.subscription.max_concurrency,
            rate_limit=sub.subscription.rate_limit,
            previous_secret_enc=next(iter(self._previous(sub)), None),
            ordering_key=d.ordering_key,
            paused_ms=d.paused_ms,
            signature_scheme=sub.subscription.signature_scheme,
            retry=sub.subscription.retry,
            headers_enc=sub.headers_enc,
            trace_context=event.trace_context,
            propagate_trace=sub.subscription.propagate_trace,
            event_type=event.type,
            transformation=sub.subscription.transformation,
        )

    async def release(self, deferrals: Sequence[tuple[records.ClaimedDelivery, int]]) -> None:
        async with self._lock:
            for claimed, due in deferrals:
                d = self._data.deliveries.get(claimed.delivery_id)
                if d is not None and d.claim_token == claimed.claim_token:
                    d.due_ms, d.claim_token = due, None
                    self._data.wake(d.subscription_id, due)
        self.notify_work()

    async def record(self, outcomes: Sequence[records.AttemptOutcome]) -> dict[str, int]:
        async with self._lock:
            return self._record(outcomes)

    def _record(self, outcomes: Sequence[records.AttemptOutcome]) -> dict[str, int]:
        data = self._data
        streaks: dict[str, int] = {}
        for o in outcomes:
            c = o.claimed
            data.attempts.append(
                records.AttemptRecord(
                    id=next(data.ids),
                    delivery_id=c.delivery_id,
                    event_id=c.event_id,
                    subscription_id=c.subscription_id,
                    attempt=c.attempt,
                    outcome=attempt_outcome(o.result),
                    status_code=o.result.status_code,
                    elapsed_ms=o.result.elapsed_ms,
                    response_body=o.result.response_body,
                    error=o.result.error,
                    created_ms=o.finished_ms,
                )
            )
            d = data.deliveries.get(c.delivery_id)
            if d is None or d.claim_token != c.claim_token:
                continue
            sub = data.subs.get(c.subscription_id)
            d.status = recorded_status(o, None if sub is None else sub.subscription.enabled)
            d.attempts, d.claim_token = c.attempt, None
            d.due_ms = o.verdict.next_attempt_ms or o.finished_ms
            d.last_status_code, d.updated_ms = o.result.status_code, o.finished_ms
            if d.status == PENDING and o.verdict.next_attempt_ms is not None:
                data.wake(d.subscription_id, o.verdict.next_attempt_ms)
            if c.max_concurrency is not None:
                data.wake(d.subscription_id, o.finished_ms)
            lets_go = c.ordering_key is not None and d.status in TERMINAL
            if lets_go and data.let_next_go(c.subscription_id, c.ordering_key or ""):
                data.wake(c.subscription_id, o.finished_ms)
        for sub_id, failures in streak_changes(outcomes):
            sub = data.subs.get(sub_id)
            if sub is None:
                continue
            streak = 0 if failures is None else sub.subscription.consecutive_failures + failures
            sub.subscription = dataclasses.replace(sub.subscription, consecutive_failures=streak)
            if failures is not None:
                streaks[sub_id] = streak
        return streaks

    async def repair(self, now_ms: int) -> int:
        async with self._lock:
            keys = {
                (d.subscription_id, d.ordering_key)
                for d in self._data.deliveries.values()
                if d.ordering_key is not None and d.status in UNFINISHED and d.blocked
            }
            freed = 0
            for sub_id, key in keys:
                assert key is not None
                if self._data.let_next_go(sub_id, key):
                    self._data.wake(sub_id, now_ms)
                    freed += 1
            for lane in self._data.lanes.values():
                due = self._earliest_claimable(lane.subscription_id)
                if due is None:
                    continue
                due = max(due, now_ms)
                if lane.next_due_ms is None or lane.next_due_ms > due:
                    lane.next_due_ms = due
                    freed += 1
            return freed

    async def report_lanes(
        self, worker_id: str, capacity: int, figures: Sequence[records.WorkerLane], now_ms: int
    ) -> None:
        stats = self._data.lane_stats
        for key in [
            k
            for k, (_, _, at) in stats.items()
            if k[0] == worker_id or at < now_ms - LANE_STATS_TTL_MS
        ]:
            del stats[key]
        for f in figures:
            stats[(worker_id, f.subscription_id)] = (f, capacity, now_ms)

    async def queue_state(self, now_ms: int) -> tuple[int, int | None]:
        pending = [d for d in self._data.deliveries.values() if d.status == PENDING]
        due = [d.due_ms for d in pending if not d.blocked and d.due_ms <= now_ms]
        return len(pending), min(due, default=None)

    async def delivery_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for d in self._data.deliveries.values():
            counts[d.status] = counts.get(d.status, 0) + 1
        return counts

    def notify_work(self) -> None:
        self._data.work.set()

    async def wait_for_work(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._data.work.wait(), seconds)
        self.forget_work()

    def forget_work(self) -> bool:
        noticed = self._data.work.is_set()
        self._data.work.clear()
        return noticed

    # --- reports ----------------------------------------------------------------------

    async def subscription_health(
        self, tenant_id: str, subscription_ids: Sequence[str], sample: int
    ) -> dict[str, records.SubscriptionHealth]:
        health: dict[str, records.SubscriptionHealth] = {}
        for sub_id in subscription_ids:
            newest = [a for a in reversed(self._data.attempts) if a.subscription_id == sub_id]
            newest = newest[:sample] if self._owned(tenant_id, sub_id) is not None else []
            if not newest:
                health[sub_id] = records.SubscriptionHealth(0, 0, None, None, None)
                continue
            ok = sum(a.outcome == "succeeded" for a in newest)
            first = newest[0]
            health[sub_id] = records.SubscriptionHealth(
                len(newest), ok, first.created_ms, first.outcome, first.status_code
            )
        return health

    async def browse_events(
        self, tenant_id: str, where: records.EventFilter, before: int | None, limit: int
    ) -> records.Page[records.EventSummary]:
        found = []
        for seq, e in sorted(self._data.events.items(), reverse=True):
            if e.tenant_id != tenant_id or (before is not None and seq >= before):
                continue
            if where.type and e.type != where.type:
                continue
            if where.before_ms is not None and e.created_ms > where.before_ms:
                continue
            ds = [d for d in self._data.deliveries.values() if d.event_seq == seq]
            if where.subscription_id and not any(
                d.subscription_id == where.subscription_id for d in ds
            ):
                continue
            if where.status and not any(d.status == where.status for d in ds):
                continue
            statuses: dict[str, int] = {}
            for d in ds:
                statuses[d.status] = statuses.get(d.status, 0) + 1
            found.append(records.EventSummary(e, statuses))
        page = _page(found, limit, lambda s: s.event.seq)
        return page

    async def event_deliveries(self, tenant_id: str, event_id: str) -> list[records.DeliveryRecord]:
        event = await self.get_event(tenant_id, event_id)
        if event is None:
            return []
        return [
            records.DeliveryRecord(
                d.id,
                d.subscription_id,
                d.status,
                d.attempts,
                d.due_ms,
                d.last_status_code,
                d.updated_ms,
            )
            for d in sorted(self._data.deliveries.values(), key=lambda d: d.id)
            if d.event_seq == event.seq
        ]

    async def attempt_histogram(
        self, tenant_id: str, since_ms: int, bucket_ms: int
    ) -> list[tuple[int, str, int]]:
        tenant_subs = {
            s for s, sub in self._data.subs.items() if sub.subscription.tenant_id == tenant_id
        }
        counts: dict[tuple[int, str], int] = {}
        for a in self._data.attempts:
            if a.subscription_id in tenant_subs and a.created_ms >= since_ms:
                start = since_ms + (a.created_ms - since_ms) // bucket_ms * bucket_ms
                counts[(start, a.outcome)] = counts.get((start, a.outcome), 0) + 1
        return [(start, outcome, n) for (start, outcome), n in sorted(counts.items())]

    async def recover_failed(
        self, tenant_id: str, since_ms: int, subscription_id: str | None
    ) -> int:
        async with self._lock:
            now = self._data.now()
            count = 0
            for d in sorted(self._data.deliveries.values(), key=lambda d: d.id):
                sub = self._data.subs.get(d.subscription_id)
                event = self._data.events.get(d.event_seq)
                if (
                    d.tenant_id != tenant_id
                    or d.status != DeliveryStatus.FAILED.value
                    or sub is None
                    or not sub.subscription.enabled
                    or (subscription_id is not None and d.subscription_id != subscription_id)
                    or event is None
                    or event.created_ms < since_ms
                ):
                    continue
                self._data.join_line(d)
                d.status, d.attempts, d.due_ms, d.claim_token, d.updated_ms = (
                    PENDING,
                    0,
                    now,
                    None,
                    now,
                )
                self._data.wake(d.subscription_id, now)
                count += 1
        if count:
            self.notify_work()
        return count

    async def lane_figures(
        self, tenant_id: str | None, subscription_ids: Sequence[str] | None, top: int
    ) -> list[records.LaneFigures]:
        now = self._data.now()
        fresh = [
            (f, capacity, worker)
            for (worker, _), (f, capacity, at) in self._data.lane_stats.items()
            if at >= now - LANE_STATS_TTL_MS
        ]
        total = sum({worker: capacity for _, capacity, worker in fresh}.values())
        figures = []
        for sub_id, sub in self._data.subs.items():
            if tenant_id is not None and sub.subscription.tenant_id != tenant_id:
                continue
            if subscription_ids is not None and sub_id not in subscription_ids:
                continue
            mine = self._data.sub_deliveries(sub_id)
            held = [f for f, _, _ in fresh if f.subscription_id == sub_id]
            in_flight = sum(f.in_flight for f in held)
            figures.append(
                records.LaneFigures(
                    subscription_id=sub_id,
                    tenant_id=sub.subscription.tenant_id,
                    backlog=sum(d.status == PENDING for d in mine),
                    paused=sum(d.status == PAUSED for d in mine),
                    in_flight=in_flight,
                    slot_limit=sum(f.slot_limit for f in held),
                    share=in_flight / total if total else 0.0,
                )
            )
        figures.sort(key=lambda f: (-f.backlog, -f.in_flight, f.subscription_id))
        return figures[:top]

    # --- retention --------------------------------------------------------------------

    async def prune_response_bodies(self, before_ms: int, batch: int) -> int:
        old = [
            i
            for i, a in enumerate(self._data.attempts)
            if a.created_ms < before_ms and a.response_body
        ][:batch]
        for i in old:
            self._data.attempts[i] = dataclasses.replace(self._data.attempts[i], response_body="")
        return len(old)

    async def prune_events(self, before_ms: int, batch: int) -> int:
        async with self._lock:
            pending = {d.event_seq for d in self._data.deliveries.values() if d.status == PENDING}
            old = sorted(
                (
                    e
                    for e in self._data.events.values()
                    if e.created_ms < before_ms and e.seq not in pending
                ),
                key=lambda e: e.created_ms,
            )[:batch]
            gone = {e.seq for e in old}
            ids = {e.id for e in old}
            self._data.attempts = [a for a in self._data.attempts if a.event_id not in ids]
            for d in [d for d in self._data.deliveries.values() if d.event_seq in gone]:
                self._data.drop_delivery(d)
            for seq in gone:
                del self._data.events[seq]
            return len(old)

    async def prune_sessions(self, before_ms: int, batch: int) -> int:
        old = sorted(
            (s for s in self._data.sessions.values() if s.expires_ms < before_ms),
            key=lambda s: s.expires_ms,
        )[:batch]
        for session in old:
            del self._data.sessions[session.id]
        return len(old)


def _page(items: Sequence[T], limit: int, key: Callable[[T], int]) -> records.Page[T]:
    next_key = key(items[limit - 1]) if len(items) > limit else None
    return records.Page(list(items[:limit]), next_key)
