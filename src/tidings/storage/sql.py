"""The ``Store`` over SQLAlchemy Core: everything both databases share.

Connectors subclass it to set up their engines and to wake workers
(``sqlite.py``: an in-process signal; ``postgres.py``: LISTEN/NOTIFY).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import RowMapping, and_, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tidings.domain.deliveries import DeliveryStatus, DisableReason
from tidings.domain.ids import new_id
from tidings.domain.subscriptions import Subscription, SubscriptionKind
from tidings.storage import migrate as migrations
from tidings.storage.base import (
    ApiKey,
    AttemptRecord,
    ClaimedDelivery,
    Outcome,
    Page,
    StoredEvent,
    Tenant,
)
from tidings.storage.schema import (
    api_keys,
    attempts,
    deliveries,
    events,
    subscriptions,
    tenants,
)

T = TypeVar("T")


def now_ms() -> int:
    return int(time.time() * 1000)


def _subscription(row: RowMapping) -> Subscription:
    return Subscription(
        id=row["id"],
        tenant_id=row["tenant_id"],
        url=row["url"],
        event_types=tuple(json.loads(row["event_types"])),
        enabled=bool(row["enabled"]),
        description=row["description"],
        kind=SubscriptionKind(row["kind"]),
        disabled_reason=DisableReason(row["disabled_reason"]) if row["disabled_reason"] else None,
        consecutive_failures=row["consecutive_failures"],
        created_ms=row["created_ms"],
        updated_ms=row["updated_ms"],
        max_concurrency=row["max_concurrency"],
        rate_limit=row["rate_limit"],
    )


def _event(row: RowMapping) -> StoredEvent:
    return StoredEvent(
        seq=row["seq"],
        id=row["id"],
        tenant_id=row["tenant_id"],
        type=row["type"],
        created_ms=row["created_ms"],
        body=row["body"],
        request_hash=row["request_hash"],
    )


def _attempt(row: RowMapping) -> AttemptRecord:
    return AttemptRecord(
        id=row["id"],
        delivery_id=row["delivery_id"],
        event_id=row["event_id"],
        subscription_id=row["subscription_id"],
        attempt=row["attempt"],
        outcome=row["outcome"],
        status_code=row["status_code"],
        elapsed_ms=row["elapsed_ms"],
        response_body=row["response_body"],
        error=row["error"],
        created_ms=row["created_ms"],
    )


def _page(
    rows: Sequence[RowMapping], limit: int, key: str, convert: Callable[[RowMapping], T]
) -> Page[T]:
    """Rows were fetched with ``limit + 1``: an extra row means another page exists."""
    next_key = rows[limit - 1][key] if len(rows) > limit else None
    return Page([convert(r) for r in rows[:limit]], next_key)


class SQLStore:
    """Writes go through ``writer``; reads through ``reader`` (the same engine on PostgreSQL)."""

    def __init__(self, writer: AsyncEngine, reader: AsyncEngine | None = None) -> None:
        self.writer = writer
        self.reader = reader or writer
        self._work = asyncio.Event()

    async def migrate(self) -> None:
        await migrations.upgrade(self.writer)

    async def close(self) -> None:
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()

    # --- tenants and keys -------------------------------------------------------------

    async def ensure_tenant(self, name: str) -> Tenant:
        async with self.writer.begin() as conn:
            row = (await conn.execute(select(tenants).where(tenants.c.name == name))).first()
            if row is not None:
                return Tenant(row.id, row.name)
            tenant = Tenant(new_id("ten"), name)
            await conn.execute(insert(tenants).values(id=tenant.id, name=name, created_ms=now_ms()))
            return tenant

    async def insert_api_key(
        self, tenant_id: str, key_hash: str, prefix: str, scopes: Sequence[str]
    ) -> ApiKey:
        key = ApiKey(new_id("key"), tenant_id, frozenset(scopes))
        async with self.writer.begin() as conn:
            await conn.execute(
                insert(api_keys).values(
                    id=key.id,
                    tenant_id=tenant_id,
                    key_hash=key_hash,
                    prefix=prefix,
                    scopes=" ".join(sorted(scopes)),
                    created_ms=now_ms(),
                )
            )
        return key

    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        query = select(api_keys).where(
            api_keys.c.key_hash == key_hash, api_keys.c.revoked_ms.is_(None)
        )
        async with self.reader.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return ApiKey(row.id, row.tenant_id, frozenset(row.scopes.split()))

    async def count_api_keys(self, tenant_id: str) -> int:
        query = select(func.count()).select_from(api_keys).where(api_keys.c.tenant_id == tenant_id)
        async with self.reader.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    # --- events -----------------------------------------------------------------------

    async def insert_event(
        self, event: StoredEvent, idempotency_key: str | None
    ) -> tuple[StoredEvent, bool]:
        try:
            async with self.writer.begin() as conn:
                if idempotency_key is not None:
                    existing = await self._event_by_key(conn, event.tenant_id, idempotency_key)
                    if existing is not None:
                        return existing, False
                await self._lock_event_stream(conn, event.tenant_id)
                stored = await self._insert_event(conn, event, idempotency_key)
                await self._fan_out(conn, stored)
        except IntegrityError:
            if idempotency_key is None:
                raise
            # A concurrent emit with the same key won the race: return its event.
            async with self.reader.connect() as conn:
                existing = await self._event_by_key(conn, event.tenant_id, idempotency_key)
            if existing is None:
                raise
            return existing, False
        self.notify_work()
        return stored, True

    async def _lock_event_stream(self, conn: AsyncConnection, tenant_id: str) -> None:
        """Make a tenant's events commit in ``seq`` order, so cursors never skip one.

        A no-op here: SQLite's ``BEGIN IMMEDIATE`` already serialises writers.
        """

    async def _announce_work(self, conn: AsyncConnection) -> None:
        """Tell other processes, once this transaction commits, that deliveries are due."""

    async def _event_by_key(
        self, conn: AsyncConnection, tenant_id: str, key: str
    ) -> StoredEvent | None:
        query = select(events).where(
            events.c.tenant_id == tenant_id, events.c.idempotency_key == key
        )
        row = (await conn.execute(query)).mappings().first()
        return _event(row) if row is not None else None

    async def _insert_event(
        self, conn: AsyncConnection, event: StoredEvent, idempotency_key: str | None
    ) -> StoredEvent:
        result = await conn.execute(
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
        seq = result.scalar_one()
        return StoredEvent(
            seq,
            event.id,
            event.tenant_id,
            event.type,
            event.created_ms,
            event.body,
            event.request_hash,
        )

    async def _fan_out(self, conn: AsyncConnection, event: StoredEvent) -> None:
        query = select(subscriptions).where(
            subscriptions.c.tenant_id == event.tenant_id, subscriptions.c.enabled.is_(True)
        )
        rows = (await conn.execute(query)).mappings().all()
        targets = [row["id"] for row in rows if _subscription(row).wants(event.type)]
        await self._insert_deliveries(conn, event, targets)

    async def _insert_deliveries(
        self, conn: AsyncConnection, event: StoredEvent, subscription_ids: Sequence[str]
    ) -> None:
        if not subscription_ids:
            return
        stamp = now_ms()
        await self._announce_work(conn)
        await conn.execute(
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
        async with self.writer.begin() as conn:
            await self._insert_deliveries(conn, event, subscription_ids)
        self.notify_work()
        return len(subscription_ids)

    async def get_event(self, tenant_id: str, event_id: str) -> StoredEvent | None:
        query = select(events).where(events.c.tenant_id == tenant_id, events.c.id == event_id)
        async with self.reader.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _event(row) if row is not None else None

    async def list_events(
        self, tenant_id: str, types: Sequence[str], after: int | None, limit: int
    ) -> Page[StoredEvent]:
        query = select(events).where(events.c.tenant_id == tenant_id)
        if types:
            query = query.where(events.c.type.in_(list(types)))
        if after is not None:
            query = query.where(events.c.seq > after)
        query = query.order_by(events.c.seq).limit(limit + 1)
        async with self.reader.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return _page(rows, limit, "seq", _event)

    async def event_type_seen(self, tenant_id: str, event_type: str) -> bool:
        query = (
            select(events.c.seq)
            .where(events.c.tenant_id == tenant_id, events.c.type == event_type)
            .limit(1)
        )
        async with self.reader.connect() as conn:
            return (await conn.execute(query)).first() is not None

    async def event_attempts(self, tenant_id: str, event_id: str) -> list[AttemptRecord]:
        query = (
            select(attempts)
            .where(attempts.c.tenant_id == tenant_id, attempts.c.event_id == event_id)
            .order_by(attempts.c.id)
        )
        async with self.reader.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_attempt(r) for r in rows]

    # --- subscriptions ----------------------------------------------------------------

    async def insert_subscription(self, subscription: Subscription, secret_enc: str) -> None:
        async with self.writer.begin() as conn:
            await conn.execute(
                insert(subscriptions).values(
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
                    created_ms=subscription.created_ms,
                    updated_ms=subscription.updated_ms,
                )
            )

    def _owned(self, tenant_id: str, subscription_id: str) -> Any:
        return and_(subscriptions.c.tenant_id == tenant_id, subscriptions.c.id == subscription_id)

    async def get_subscription(self, tenant_id: str, subscription_id: str) -> Subscription | None:
        query = select(subscriptions).where(self._owned(tenant_id, subscription_id))
        async with self.reader.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _subscription(row) if row is not None else None

    async def list_subscriptions(
        self, tenant_id: str, after: int | None, limit: int
    ) -> Page[Subscription]:
        query = select(subscriptions).where(subscriptions.c.tenant_id == tenant_id)
        if after is not None:
            query = query.where(subscriptions.c.seq > after)
        query = query.order_by(subscriptions.c.seq).limit(limit + 1)
        async with self.reader.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return _page(rows, limit, "seq", _subscription)

    async def matching_subscriptions(self, tenant_id: str, event_type: str) -> list[Subscription]:
        query = select(subscriptions).where(
            subscriptions.c.tenant_id == tenant_id, subscriptions.c.enabled.is_(True)
        )
        async with self.reader.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        found = [_subscription(r) for r in rows]
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
            values["disabled_reason"] = DisableReason.MANUAL.value
        values["updated_ms"] = now_ms()
        async with self.writer.begin() as conn:
            result = await conn.execute(
                update(subscriptions)
                .where(self._owned(tenant_id, subscription_id))
                .values(**values)
                .returning(*subscriptions.c)
            )
            row = result.mappings().first()
            if row is not None and values.get("enabled") is False:
                await self._cancel_pending(conn, subscription_id)
        return _subscription(row) if row is not None else None

    async def delete_subscription(self, tenant_id: str, subscription_id: str) -> bool:
        async with self.writer.begin() as conn:
            result = await conn.execute(
                delete(subscriptions).where(self._owned(tenant_id, subscription_id))
            )
            if result.rowcount == 0:
                return False
            await self._cancel_pending(conn, subscription_id)
        return True

    async def _cancel_pending(self, conn: AsyncConnection, subscription_id: str) -> None:
        await conn.execute(
            update(deliveries)
            .where(
                deliveries.c.subscription_id == subscription_id,
                deliveries.c.status == DeliveryStatus.PENDING.value,
            )
            .values(status=DeliveryStatus.CANCELLED.value, claim_token=None, updated_ms=now_ms())
        )

    async def subscription_secret(self, tenant_id: str, subscription_id: str) -> str | None:
        query = select(subscriptions.c.secret_enc).where(self._owned(tenant_id, subscription_id))
        async with self.reader.connect() as conn:
            value = (await conn.execute(query)).scalar_one_or_none()
        return str(value) if value is not None else None

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
        async with self.reader.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return _page(rows, limit, "id", _attempt)

    # --- the dispatcher's queue -------------------------------------------------------

    async def claim_due(
        self, limit: int, lease_ms: int, now_ms: int, skip_subscriptions: Sequence[str] = ()
    ) -> list[ClaimedDelivery]:
        """Lease up to ``limit`` due deliveries by pushing their due time past the lease.

        A worker that dies simply lets the lease run out: the row is due again.
        ``skip_subscriptions`` leaves the rows of saturated subscriptions for later.
        """
        token = uuid.uuid4().hex
        due = (
            select(deliveries.c.id)
            .where(
                deliveries.c.status == DeliveryStatus.PENDING.value,
                deliveries.c.due_ms <= now_ms,
            )
            .order_by(deliveries.c.due_ms)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if skip_subscriptions:
            due = due.where(deliveries.c.subscription_id.not_in(list(skip_subscriptions)))
        lease = (
            update(deliveries)
            .where(deliveries.c.id.in_(due.scalar_subquery()))
            .values(due_ms=now_ms + lease_ms, claim_token=token)
            .returning(deliveries.c.id, deliveries.c.attempts)
        )
        async with self.writer.begin() as conn:
            claimed = {row.id: row.attempts for row in await conn.execute(lease)}
            if not claimed:
                return []
            rows = (await conn.execute(_CLAIM_DETAILS, {"ids": list(claimed)})).mappings().all()
            disabled = [row["id"] for row in rows if not row["enabled"]]
            if disabled:
                await conn.execute(
                    update(deliveries)
                    .where(deliveries.c.id.in_(disabled))
                    .values(status=DeliveryStatus.CANCELLED.value, claim_token=None)
                )
        return [
            ClaimedDelivery(
                delivery_id=row["id"],
                claim_token=token,
                attempt=claimed[row["id"]] + 1,
                tenant_id=row["tenant_id"],
                event_id=row["event_id"],
                event_created_ms=row["created_ms"],
                body=row["body"],
                subscription_id=row["subscription_id"],
                url=row["url"],
                secret_enc=row["secret_enc"],
                max_concurrency=row["max_concurrency"],
                rate_limit=row["rate_limit"],
            )
            for row in rows
            if row["enabled"]
        ]

    async def release(self, deferrals: Sequence[tuple[ClaimedDelivery, int]]) -> None:
        if not deferrals:
            return
        async with self.writer.begin() as conn:
            await conn.execute(
                update(deliveries)
                .where(
                    deliveries.c.id == bindparam("b_id"),
                    deliveries.c.claim_token == bindparam("b_token"),
                )
                .values(due_ms=bindparam("b_due"), claim_token=None),
                [
                    {"b_id": d.delivery_id, "b_token": d.claim_token, "b_due": due}
                    for d, due in deferrals
                ],
            )

    async def record_outcomes(self, outcomes: Sequence[Outcome]) -> dict[str, int]:
        if not outcomes:
            return {}
        async with self.writer.begin() as conn:
            await conn.execute(insert(attempts), [_attempt_row(o) for o in outcomes])
            await conn.execute(
                update(deliveries)
                .where(
                    deliveries.c.id == bindparam("b_id"),
                    deliveries.c.claim_token == bindparam("b_token"),
                )
                .values(
                    status=bindparam("b_status"),
                    attempts=bindparam("b_attempt"),
                    due_ms=bindparam("b_due"),
                    claim_token=None,
                    last_status_code=bindparam("b_code"),
                    updated_ms=bindparam("b_now"),
                ),
                [_delivery_update(o) for o in outcomes],
            )
            return await self._update_streaks(conn, outcomes)

    async def _update_streaks(
        self, conn: AsyncConnection, outcomes: Sequence[Outcome]
    ) -> dict[str, int]:
        """Reset a subscription's failure streak on success, extend it on failure."""
        delta: dict[str, int | None] = {}
        for o in outcomes:
            sub_id = o.claimed.subscription_id
            if o.result.succeeded:
                delta[sub_id] = None
            else:
                previous = delta.get(sub_id, 0)
                delta[sub_id] = (previous or 0) + 1
        for sub_id, failures in delta.items():
            column = subscriptions.c.consecutive_failures
            await conn.execute(
                update(subscriptions)
                .where(subscriptions.c.id == sub_id)
                .values(consecutive_failures=0 if failures is None else column + failures)
            )
        failing = [sub_id for sub_id, failures in delta.items() if failures is not None]
        if not failing:
            return {}
        rows = await conn.execute(
            select(subscriptions.c.id, subscriptions.c.consecutive_failures).where(
                subscriptions.c.id.in_(failing)
            )
        )
        return {row.id: row.consecutive_failures for row in rows}

    async def disable_subscription(
        self, tenant_id: str, subscription_id: str, reason: DisableReason
    ) -> Subscription | None:
        async with self.writer.begin() as conn:
            result = await conn.execute(
                update(subscriptions)
                .where(self._owned(tenant_id, subscription_id), subscriptions.c.enabled.is_(True))
                .values(enabled=False, disabled_reason=reason.value, updated_ms=now_ms())
                .returning(*subscriptions.c)
            )
            row = result.mappings().first()
            if row is None:
                return None
            await self._cancel_pending(conn, subscription_id)
        return _subscription(row)

    # --- retention ----------------------------------------------------------------------

    async def prune_response_bodies(self, before_ms: int, batch: int) -> int:
        old = (
            select(attempts.c.id)
            .where(attempts.c.created_ms < before_ms, attempts.c.response_body != "")
            .limit(batch)
        )
        async with self.writer.begin() as conn:
            result = await conn.execute(
                update(attempts)
                .where(attempts.c.id.in_(old.scalar_subquery()))
                .values(response_body="")
            )
        return int(result.rowcount)

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
        async with self.writer.begin() as conn:
            rows = (await conn.execute(old)).all()
            if not rows:
                return 0
            seqs = [row.seq for row in rows]
            await conn.execute(
                delete(attempts).where(attempts.c.event_id.in_([r.id for r in rows]))
            )
            await conn.execute(delete(deliveries).where(deliveries.c.event_seq.in_(seqs)))
            await conn.execute(delete(events).where(events.c.seq.in_(seqs)))
        return len(rows)

    def notify_work(self) -> None:
        self._work.set()

    async def wait_for_work(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._work.wait(), seconds)
        self._work.clear()


_CLAIM_DETAILS = (
    select(
        deliveries.c.id,
        events.c.id.label("event_id"),
        events.c.tenant_id,
        events.c.created_ms,
        events.c.body,
        deliveries.c.subscription_id,
        subscriptions.c.url,
        subscriptions.c.secret_enc,
        subscriptions.c.enabled,
        subscriptions.c.max_concurrency,
        subscriptions.c.rate_limit,
    )
    .select_from(
        deliveries.join(events, events.c.seq == deliveries.c.event_seq).outerjoin(
            subscriptions, subscriptions.c.id == deliveries.c.subscription_id
        )
    )
    .where(deliveries.c.id.in_(bindparam("ids", expanding=True)))
)
"""What a worker needs to send a claimed delivery (a vanished subscription reads as disabled)."""


def _attempt_row(o: Outcome) -> dict[str, Any]:
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


def _delivery_update(o: Outcome) -> dict[str, Any]:
    return {
        "b_id": o.claimed.delivery_id,
        "b_token": o.claimed.claim_token,
        "b_status": o.verdict.status.value,
        "b_attempt": o.claimed.attempt,
        "b_due": o.verdict.next_attempt_ms or o.finished_ms,
        "b_code": o.result.status_code,
        "b_now": o.finished_ms,
    }
