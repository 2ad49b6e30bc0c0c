"""The ``Store`` over SQLAlchemy Core: everything both databases share.

Every transaction is a plain synchronous function of a ``Connection``. Connectors decide
how to run it (``_write`` / ``_read``): ``sqlite.py`` in a dedicated thread on the
standard library driver (one hop per transaction, not per statement); ``postgres.py`` on
asyncpg through ``AsyncConnection.run_sync``. They also decide how to wake workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    RowMapping,
    TextClause,
    and_,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from tidings.domain.deliveries import DeliveryStatus, DisableReason
from tidings.domain.ids import new_id
from tidings.domain.subscriptions import Subscription
from tidings.storage import migrate as migrations
from tidings.storage.base import (
    ApiKey,
    AttemptRecord,
    ClaimedDelivery,
    Outbox,
    Outcome,
    Page,
    StoredEvent,
    Tenant,
)
from tidings.storage.rows import attempt_of, event_of, now_ms, page_of, subscription_of
from tidings.storage.schema import (
    api_keys,
    attempts,
    deliveries,
    events,
    subscriptions,
    tenants,
)
from tidings.storage.sql_reports import ReportQueries

T = TypeVar("T")


class SQLStore(ReportQueries):
    """The shared implementation; connectors provide ``_write``, ``_read`` and the hooks."""

    def __init__(self) -> None:
        self._work = asyncio.Event()
        self._woken = False

    async def _write(self, tx: Callable[[Connection], T]) -> T:
        """Run ``tx`` in one write transaction."""
        raise NotImplementedError

    async def _read(self, tx: Callable[[Connection], T]) -> T:
        raise NotImplementedError

    async def migrate(self) -> None:
        await self._write(migrations.upgrade_connection)

    async def close(self) -> None:
        raise NotImplementedError

    def _lock_event_stream(self, conn: Connection, tenant_id: str) -> None:
        """Make a tenant's events commit in ``seq`` order, so cursors never skip one.

        A no-op here: SQLite's ``BEGIN IMMEDIATE`` already serialises writers.
        """

    def _announce_work(self, conn: Connection) -> None:
        """Tell other processes, once this transaction commits, that deliveries are due."""

    # --- tenants and keys -------------------------------------------------------------

    async def ensure_tenant(self, name: str) -> Tenant:
        def tx(conn: Connection) -> Tenant:
            row = conn.execute(select(tenants).where(tenants.c.name == name)).first()
            if row is not None:
                return Tenant(row.id, row.name)
            tenant = Tenant(new_id("ten"), name)
            conn.execute(insert(tenants).values(id=tenant.id, name=name, created_ms=now_ms()))
            return tenant

        return await self._write(tx)

    async def insert_api_key(
        self, tenant_id: str, key_hash: str, prefix: str, scopes: Sequence[str]
    ) -> ApiKey:
        key = ApiKey(new_id("key"), tenant_id, frozenset(scopes))
        statement = insert(api_keys).values(
            id=key.id,
            tenant_id=tenant_id,
            key_hash=key_hash,
            prefix=prefix,
            scopes=" ".join(sorted(scopes)),
            created_ms=now_ms(),
        )
        await self._write(lambda conn: conn.execute(statement))
        return key

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        query = select(tenants).where(tenants.c.id == tenant_id)
        row = await self._read(lambda conn: conn.execute(query).first())
        return Tenant(row.id, row.name) if row is not None else None

    async def find_tenant(self, name: str) -> Tenant | None:
        query = select(tenants).where(tenants.c.name == name)
        row = await self._read(lambda conn: conn.execute(query).first())
        return Tenant(row.id, row.name) if row is not None else None

    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        query = select(api_keys).where(
            api_keys.c.key_hash == key_hash, api_keys.c.revoked_ms.is_(None)
        )
        row = await self._read(lambda conn: conn.execute(query).first())
        if row is None:
            return None
        return ApiKey(row.id, row.tenant_id, frozenset(row.scopes.split()))

    async def count_api_keys(self, tenant_id: str) -> int:
        query = select(func.count()).select_from(api_keys).where(api_keys.c.tenant_id == tenant_id)
        return int(await self._read(lambda conn: conn.execute(query).scalar_one()))

    # --- events -----------------------------------------------------------------------

    async def insert_event(
        self, event: StoredEvent, idempotency_key: str | None
    ) -> tuple[StoredEvent, bool]:
        def tx(conn: Connection) -> tuple[StoredEvent, bool]:
            if idempotency_key is not None:
                existing = _event_by_key(conn, event.tenant_id, idempotency_key)
                if existing is not None:
                    return existing, False
            self._lock_event_stream(conn, event.tenant_id)
            stored = _insert_event(conn, event, idempotency_key)
            self._fan_out(conn, stored)
            return stored, True

        try:
            stored, created = await self._write(tx)
        except IntegrityError:
            if idempotency_key is None:
                raise
            # A concurrent emit with the same key won the race: return its event.
            key = idempotency_key
            existing = await self._read(lambda conn: _event_by_key(conn, event.tenant_id, key))
            if existing is None:
                raise
            return existing, False
        if created:
            self.notify_work()
        return stored, created

    async def in_transaction(self, work: Callable[[Connection, Outbox], T]) -> T:
        added: list[StoredEvent] = []

        def tx(conn: Connection) -> T:
            return work(conn, _TransactionOutbox(self, conn, added))

        result = await self._write(tx)
        if added:
            self.notify_work()
        return result

    FAN_OUT_NOTIFIES = False
    FAN_OUT: TextClause
    """One INSERT ... SELECT queueing a delivery for every enabled subscription whose
    patterns match ``:type``; the connector writes it in its dialect's JSON functions.
    It mirrors ``EventPattern.matches`` (a test holds the two to the same answers)."""

    def _fan_out(self, conn: Connection, event: StoredEvent) -> None:
        stamp = now_ms()
        result = conn.execute(
            self.FAN_OUT,
            {"tenant": event.tenant_id, "seq": event.seq, "type": event.type, "now": stamp},
        )
        if result.rowcount and not self.FAN_OUT_NOTIFIES:
            self._announce_work(conn)

    def _insert_deliveries(
        self, conn: Connection, event: StoredEvent, subscription_ids: Sequence[str]
    ) -> None:
        if not subscription_ids:
            return
        stamp = now_ms()
        self._announce_work(conn)
        conn.execute(
            insert(deliveries),
            [
                {
                    "tenant_id": event.tenant_id,
                    "event_seq": event.seq,
                    "subscription_id": sub_id,
                    "status": DeliveryStatus.PENDING.value,
                    "attempts": 0,
                    "due_ms": stamp,
                    "created_ms": stamp,
                    "updated_ms": stamp,
                }
                for sub_id in subscription_ids
            ],
        )

    async def enqueue(self, event: StoredEvent, subscription_ids: Sequence[str]) -> int:
        await self._write(lambda conn: self._insert_deliveries(conn, event, subscription_ids))
        self.notify_work()
        return len(subscription_ids)

    async def get_event(self, tenant_id: str, event_id: str) -> StoredEvent | None:
        query = select(events).where(events.c.tenant_id == tenant_id, events.c.id == event_id)
        row = await self._read(lambda conn: conn.execute(query).mappings().first())
        return event_of(row) if row is not None else None

    async def list_events(
        self, tenant_id: str, types: Sequence[str], after: int | None, limit: int
    ) -> Page[StoredEvent]:
        query = select(events).where(events.c.tenant_id == tenant_id)
        if types:
            query = query.where(events.c.type.in_(list(types)))
        if after is not None:
            query = query.where(events.c.seq > after)
        query = query.order_by(events.c.seq).limit(limit + 1)
        rows = await self._read(lambda conn: conn.execute(query).mappings().all())
        return page_of(rows, limit, "seq", event_of)

    async def event_type_seen(self, tenant_id: str, event_type: str) -> bool:
        query = (
            select(events.c.seq)
            .where(events.c.tenant_id == tenant_id, events.c.type == event_type)
            .limit(1)
        )
        return await self._read(lambda conn: conn.execute(query).first() is not None)

    async def recent_events(self, tenant_id: str, event_type: str, limit: int) -> list[StoredEvent]:
        query = (
            select(events)
            .where(events.c.tenant_id == tenant_id, events.c.type == event_type)
            .order_by(events.c.seq.desc())
            .limit(limit)
        )
        rows = await self._read(lambda conn: conn.execute(query).mappings().all())
        return [event_of(r) for r in rows]

    async def event_attempts(self, tenant_id: str, event_id: str) -> list[AttemptRecord]:
        query = (
            select(attempts)
            .where(attempts.c.tenant_id == tenant_id, attempts.c.event_id == event_id)
            .order_by(attempts.c.id)
        )
        rows = await self._read(lambda conn: conn.execute(query).mappings().all())
        return [attempt_of(r) for r in rows]

    # --- subscriptions ----------------------------------------------------------------

    async def insert_subscription(self, subscription: Subscription, secret_enc: str) -> None:
        statement = insert(subscriptions).values(
            id=subscription.id,
            tenant_id=subscription.tenant_id,
            kind=subscription.kind.value,
            url=subscription.url,
            event_types=json.dumps(list(subscription.event_types)),
            description=subscription.description,
            enabled=subscription.enabled,
            disabled_reason=subscription.disabled_reason,
            secret_enc=secret_enc,
            consecutive_failures=0,
            max_concurrency=subscription.max_concurrency,
            rate_limit=subscription.rate_limit,
            public_key=subscription.public_key,
            created_ms=subscription.created_ms,
            updated_ms=subscription.updated_ms,
        )
        await self._write(lambda conn: conn.execute(statement))

    async def get_subscription(self, tenant_id: str, subscription_id: str) -> Subscription | None:
        query = select(subscriptions).where(_owned(tenant_id, subscription_id))
        row = await self._read(lambda conn: conn.execute(query).mappings().first())
        return subscription_of(row) if row is not None else None

    async def list_subscriptions(
        self, tenant_id: str, after: int | None, limit: int
    ) -> Page[Subscription]:
        query = select(subscriptions).where(subscriptions.c.tenant_id == tenant_id)
        if after is not None:
            query = query.where(subscriptions.c.seq > after)
        query = query.order_by(subscriptions.c.seq).limit(limit + 1)
        rows = await self._read(lambda conn: conn.execute(query).mappings().all())
        return page_of(rows, limit, "seq", subscription_of)

    async def matching_subscriptions(self, tenant_id: str, event_type: str) -> list[Subscription]:
        query = select(subscriptions).where(
            subscriptions.c.tenant_id == tenant_id, subscriptions.c.enabled.is_(True)
        )
        rows = await self._read(lambda conn: conn.execute(query).mappings().all())
        found = [subscription_of(r) for r in rows]
        return [s for s in found if s.wants(event_type)]

    async def update_subscription(
        self, tenant_id: str, subscription_id: str, changes: Mapping[str, Any]
    ) -> Subscription | None:
        values = dict(changes)
        if "event_types" in values:
            values["event_types"] = json.dumps(list(values["event_types"]))
        if values.get("enabled") is True:
            values.update(disabled_reason=None, consecutive_failures=0)
        elif values.get("enabled") is False:
            values.setdefault("disabled_reason", DisableReason.MANUAL.value)
        values["updated_ms"] = now_ms()
        statement = (
            update(subscriptions)
            .where(_owned(tenant_id, subscription_id))
            .values(**values)
            .returning(*subscriptions.c)
        )

        def tx(conn: Connection) -> RowMapping | None:
            row = conn.execute(statement).mappings().first()
            if row is not None and values.get("enabled") is False:
                _cancel_pending(conn, subscription_id)
            return row

        row = await self._write(tx)
        return subscription_of(row) if row is not None else None

    async def delete_subscription(self, tenant_id: str, subscription_id: str) -> bool:
        def tx(conn: Connection) -> bool:
            result = conn.execute(delete(subscriptions).where(_owned(tenant_id, subscription_id)))
            if result.rowcount == 0:
                return False
            _cancel_pending(conn, subscription_id)
            return True

        return await self._write(tx)

    async def subscription_secrets(self, tenant_id: str, subscription_id: str) -> list[str]:
        query = select(
            subscriptions.c.secret_enc,
            subscriptions.c.previous_secret_enc,
            subscriptions.c.previous_secret_expires_ms,
        ).where(_owned(tenant_id, subscription_id))
        row = await self._read(lambda conn: conn.execute(query).mappings().first())
        if row is None:
            return []
        return [row["secret_enc"], *_previous_secret(row, now_ms())]

    async def rotate_secret(
        self,
        tenant_id: str,
        subscription_id: str,
        secret_enc: str,
        public_key: str | None,
        grace_until_ms: int,
    ) -> Subscription | None:
        statement = (
            update(subscriptions)
            .where(_owned(tenant_id, subscription_id))
            .values(
                previous_secret_enc=subscriptions.c.secret_enc,
                previous_secret_expires_ms=grace_until_ms,
                secret_enc=secret_enc,
                public_key=public_key,
                updated_ms=now_ms(),
            )
            .returning(*subscriptions.c)
        )
        row = await self._write(lambda conn: conn.execute(statement).mappings().first())
        return subscription_of(row) if row is not None else None

    async def subscription_attempts(
        self,
        tenant_id: str,
        subscription_id: str,
        outcome: str | None,
        before: int | None,
        limit: int,
    ) -> Page[AttemptRecord]:
        query = select(attempts).where(
            attempts.c.tenant_id == tenant_id, attempts.c.subscription_id == subscription_id
        )
        if outcome is not None:
            query = query.where(attempts.c.outcome == outcome)
        if before is not None:
            query = query.where(attempts.c.id < before)
        query = query.order_by(attempts.c.id.desc()).limit(limit + 1)
        rows = await self._read(lambda conn: conn.execute(query).mappings().all())
        return page_of(rows, limit, "id", attempt_of)

    # --- the dispatcher's queue -------------------------------------------------------

    async def release(self, deferrals: Sequence[tuple[ClaimedDelivery, int]]) -> None:
        if not deferrals:
            return
        params = [
            {"b_id": d.delivery_id, "b_token": d.claim_token, "b_due": due} for d, due in deferrals
        ]
        await self._write(lambda conn: conn.execute(_RELEASE, params))

    async def disable_subscription(
        self, tenant_id: str, subscription_id: str, reason: DisableReason
    ) -> Subscription | None:
        statement = (
            update(subscriptions)
            .where(_owned(tenant_id, subscription_id), subscriptions.c.enabled.is_(True))
            .values(enabled=False, disabled_reason=reason.value, updated_ms=now_ms())
            .returning(*subscriptions.c)
        )

        def tx(conn: Connection) -> RowMapping | None:
            row = conn.execute(statement).mappings().first()
            if row is not None:
                _cancel_pending(conn, subscription_id)
            return row

        row = await self._write(tx)
        return subscription_of(row) if row is not None else None

    async def queue_state(self, now_ms: int) -> tuple[int, int | None]:
        pending = deliveries.c.status == DeliveryStatus.PENDING.value
        count = select(func.count()).select_from(deliveries).where(pending)
        oldest = select(func.min(deliveries.c.due_ms)).where(pending, deliveries.c.due_ms <= now_ms)

        def read(conn: Connection) -> tuple[int, int | None]:
            due = conn.execute(oldest).scalar_one_or_none()
            return int(conn.execute(count).scalar_one()), None if due is None else int(due)

        return await self._read(read)

    async def delivery_counts(self) -> dict[str, int]:
        query = select(deliveries.c.status, func.count()).group_by(deliveries.c.status)
        rows = await self._read(lambda conn: conn.execute(query).all())
        return {status: int(count) for status, count in rows}

    # --- retention ----------------------------------------------------------------------

    async def prune_response_bodies(self, before_ms: int, batch: int) -> int:
        old = (
            select(attempts.c.id)
            .where(attempts.c.created_ms < before_ms, attempts.c.response_body != "")
            .limit(batch)
        )
        statement = (
            update(attempts)
            .where(attempts.c.id.in_(old.scalar_subquery()))
            .values(response_body="")
        )
        return await self._write(lambda conn: int(conn.execute(statement).rowcount))

    async def prune_events(self, before_ms: int, batch: int) -> int:
        pending = (
            select(deliveries.c.id)
            .where(
                deliveries.c.event_seq == events.c.seq,
                deliveries.c.status == DeliveryStatus.PENDING.value,
            )
            .exists()
        )
        old = (
            select(events.c.seq, events.c.id)
            .where(events.c.created_ms < before_ms, ~pending)
            .order_by(events.c.created_ms)
            .limit(batch)
        )

        def tx(conn: Connection) -> int:
            rows = conn.execute(old).all()
            if not rows:
                return 0
            seqs = [row.seq for row in rows]
            event_ids = [row.id for row in rows]
            conn.execute(delete(attempts).where(attempts.c.event_id.in_(event_ids)))
            conn.execute(delete(deliveries).where(deliveries.c.event_seq.in_(seqs)))
            conn.execute(delete(events).where(events.c.seq.in_(seqs)))
            return len(rows)

        return await self._write(tx)

    # --- waking workers ---------------------------------------------------------------

    def notify_work(self) -> None:
        self._work.set()

    async def wait_for_work(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._work.wait(), seconds)
        self._woken = self._work.is_set()
        self._work.clear()


CLAIM_SCAN_FACTOR = 4
"""Due rows looked at per row wanted, so per-subscription room can skip some."""


def claimed_deliveries(
    rows: Sequence[Any], attempts_made: Mapping[int, int], token: str
) -> list[ClaimedDelivery]:
    """Build the claims from the connectors' claim-details rows (a vanished subscription
    reads as disabled), dropping disabled subscriptions'."""
    now = now_ms()
    return [
        ClaimedDelivery(
            delivery_id=row["id"],
            claim_token=token,
            attempt=attempts_made[row["id"]] + 1,
            tenant_id=row["tenant_id"],
            event_id=row["event_id"],
            event_created_ms=row["created_ms"],
            body=row["body"],
            subscription_id=row["subscription_id"],
            url=row["url"],
            secret_enc=row["secret_enc"],
            max_concurrency=row["max_concurrency"],
            rate_limit=row["rate_limit"],
            previous_secret_enc=next(iter(_previous_secret(row, now)), None),
        )
        for row in rows
        if row["enabled"]
    ]


def _previous_secret(row: Any, now: int) -> list[str]:
    expires = row["previous_secret_expires_ms"]
    if row["previous_secret_enc"] and expires is not None and expires > now:
        return [row["previous_secret_enc"]]
    return []


def pick_claims(candidates: Sequence[Any], room: Callable[[str], int], limit: int) -> list[int]:
    """Oldest first, at most ``room(sub)`` per subscription and ``limit`` in all."""
    taken: dict[str, int] = {}
    chosen: list[int] = []
    for delivery_id, sub_id in candidates:
        count = taken.get(sub_id, 0)
        if count < room(sub_id):
            taken[sub_id] = count + 1
            chosen.append(delivery_id)
            if len(chosen) == limit:
                break
    return chosen


class _TransactionOutbox:
    def __init__(self, store: SQLStore, conn: Connection, added: list[StoredEvent]) -> None:
        self._store = store
        self._conn = conn
        self._added = added

    def add(self, event: StoredEvent) -> StoredEvent:
        self._store._lock_event_stream(self._conn, event.tenant_id)
        stored = _insert_event(self._conn, event, None)
        self._store._fan_out(self._conn, stored)
        self._added.append(stored)
        return stored


def _owned(tenant_id: str, subscription_id: str) -> Any:
    return and_(subscriptions.c.tenant_id == tenant_id, subscriptions.c.id == subscription_id)


def _event_by_key(conn: Connection, tenant_id: str, key: str) -> StoredEvent | None:
    query = select(events).where(events.c.tenant_id == tenant_id, events.c.idempotency_key == key)
    row = conn.execute(query).mappings().first()
    return event_of(row) if row is not None else None


def _insert_event(conn: Connection, event: StoredEvent, idempotency_key: str | None) -> StoredEvent:
    statement = (
        insert(events)
        .values(
            id=event.id,
            tenant_id=event.tenant_id,
            type=event.type,
            created_ms=event.created_ms,
            body=event.body,
            idempotency_key=idempotency_key,
            request_hash=event.request_hash,
        )
        .returning(events.c.seq)
    )
    seq = conn.execute(statement).scalar_one()
    return dataclasses.replace(event, seq=seq)


def _cancel_pending(conn: Connection, subscription_id: str) -> None:
    conn.execute(
        update(deliveries)
        .where(
            deliveries.c.subscription_id == subscription_id,
            deliveries.c.status == DeliveryStatus.PENDING.value,
        )
        .values(status=DeliveryStatus.CANCELLED.value, claim_token=None, updated_ms=now_ms())
    )


def streak_changes(outcomes: Sequence[Outcome]) -> list[tuple[str, int | None]]:
    """Per subscription, in id order: None to reset its failure streak, else failures to add.

    Rows are updated in id order, so two workers recording at once lock them in the same
    order and cannot deadlock. Connectors skip the reset when the streak is already 0,
    so healthy subscriptions do not become a row every record transaction must lock.
    """
    delta: dict[str, int | None] = {}
    for o in outcomes:
        sub_id = o.claimed.subscription_id
        delta[sub_id] = None if o.result.succeeded else (delta.get(sub_id) or 0) + 1
    return sorted(delta.items())


_RELEASE = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("b_id"), deliveries.c.claim_token == bindparam("b_token"))
    .values(due_ms=bindparam("b_due"), claim_token=None)
)


def attempt_row(o: Outcome) -> dict[str, Any]:
    return {
        "delivery_id": o.claimed.delivery_id,
        "tenant_id": o.claimed.tenant_id,
        "event_id": o.claimed.event_id,
        "subscription_id": o.claimed.subscription_id,
        "attempt": o.claimed.attempt,
        "outcome": "succeeded" if o.result.succeeded else "failed",
        "status_code": o.result.status_code,
        "elapsed_ms": o.result.elapsed_ms,
        "response_body": o.result.response_body,
        "error": o.result.error,
        "created_ms": o.finished_ms,
    }


def delivery_update(o: Outcome) -> dict[str, Any]:
    return {
        "b_id": o.claimed.delivery_id,
        "b_token": o.claimed.claim_token,
        "b_status": o.verdict.status.value,
        "b_attempt": o.claimed.attempt,
        "b_due": o.verdict.next_attempt_ms or o.finished_ms,
        "b_code": o.result.status_code,
        "b_now": o.finished_ms,
    }
