"""Events: emit (with fan-out to subscriptions), the outbox, polling and lookups."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection, insert, select, text
from sqlalchemy.exc import IntegrityError

from tidings.domain.clock import now_ms
from tidings.storage.interfaces import Outbox
from tidings.storage.records import AttemptRecord, Page, StoredEvent
from tidings.storage.rows import attempt_of, event_of, page_of
from tidings.storage.schema import attempts, events
from tidings.storage.sql.database import Database, SQLPart
from tidings.storage.sql.filtering import matched_param

T = TypeVar("T")


class SQLEvents(SQLPart):
    async def insert_event(
        self, event: StoredEvent, idempotency_key: str | None
    ) -> tuple[StoredEvent, bool]:
        def tx(conn: Connection) -> tuple[StoredEvent, bool]:
            if idempotency_key is not None:
                # Looked up under the stream lock the insert takes: on PostgreSQL that
                # is what keeps keys unique (a partitioned table has no unique index).
                self._db.lock_event_stream(conn, event.tenant_id)
                existing = _event_by_key(conn, event.tenant_id, idempotency_key)
                if existing is not None:
                    return existing, False
            return add_event(self._db, conn, event, idempotency_key), True

        try:
            stored, created = await self._db.write(tx)
        except IntegrityError:
            if idempotency_key is None:
                raise
            # A concurrent emit with the same key won the race (SQLite's unique index,
            # or a PostgreSQL database not yet partitioned): return its event.
            key = idempotency_key
            existing = await self._db.read(lambda conn: _event_by_key(conn, event.tenant_id, key))
            if existing is None:
                raise
            return existing, False
        if created:
            self._db.notify_work()
        return stored, created

    async def in_transaction(self, work: Callable[[Connection, Outbox], T]) -> T:
        added: list[StoredEvent] = []

        def tx(conn: Connection) -> T:
            return work(conn, _TransactionOutbox(self._db, conn, added))

        result = await self._db.write(tx, alone=True)  # the app may commit, say
        if added:
            self._db.notify_work()
        return result

    async def enqueue(self, event: StoredEvent, subscription_ids: Sequence[str]) -> int:
        if not subscription_ids:
            return 0
        await self._db.write(
            lambda conn: _insert_deliveries(self._db, conn, event, subscription_ids)
        )
        self._db.notify_work()
        return len(subscription_ids)

    async def get_event(self, tenant_id: str, event_id: str) -> StoredEvent | None:
        query = select(events).where(events.c.tenant_id == tenant_id, events.c.id == event_id)
        row = await self._db.read(lambda conn: conn.execute(query).mappings().first())
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
        rows = await self._db.read(lambda conn: conn.execute(query).mappings().all())
        return page_of(rows, limit, "seq", event_of)

    async def event_type_seen(self, tenant_id: str, event_type: str) -> bool:
        query = (
            select(events.c.seq)
            .where(events.c.tenant_id == tenant_id, events.c.type == event_type)
            .limit(1)
        )
        return await self._db.read(lambda conn: conn.execute(query).first() is not None)

    async def recent_events(self, tenant_id: str, event_type: str, limit: int) -> list[StoredEvent]:
        query = (
            select(events)
            .where(events.c.tenant_id == tenant_id, events.c.type == event_type)
            .order_by(events.c.seq.desc())
            .limit(limit)
        )
        rows = await self._db.read(lambda conn: conn.execute(query).mappings().all())
        return [event_of(r) for r in rows]

    async def event_attempts(self, tenant_id: str, event_id: str) -> list[AttemptRecord]:
        query = (
            select(attempts)
            .where(attempts.c.tenant_id == tenant_id, attempts.c.event_id == event_id)
            .order_by(attempts.c.id)
        )
        rows = await self._db.read(lambda conn: conn.execute(query).mappings().all())
        return [attempt_of(r) for r in rows]


def add_event(
    db: Database, conn: Connection, event: StoredEvent, idempotency_key: str | None
) -> StoredEvent:
    """Insert the event and fan it out, in the caller's transaction: to the unfiltered
    subscriptions that want it, and to the filtered ones whose filter it passes, as of
    this transaction (it holds the tenant's stream lock, which filter changes take too)."""
    tenant = event.tenant_id
    db.lock_event_stream(conn, tenant)
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
            ordering_key=event.ordering_key,
            trace_context=event.trace_context,
        )
        .returning(events.c.seq)
    )
    stored = dataclasses.replace(event, seq=conn.execute(statement).scalar_one())
    book = db.filters.current(lambda sql, params: conn.execute(text(sql), params).all(), tenant)
    matched = book.matching(stored.type, stored.body)
    for sql in db.fan_out(matched):
        conn.execute(text(sql), fan_out_params(stored, matched))
    return stored


def fan_out_params(event: StoredEvent, matched: Sequence[str] = ()) -> dict[str, Any]:
    """The parameters of ``Database.fan_out(matched)``'s statements."""
    params = {
        "tenant": event.tenant_id,
        "seq": event.seq,
        "type": event.type,
        "key": event.ordering_key or "",
        "now": now_ms(),
    }
    if matched:
        params["matched"] = matched_param(matched)
    return params


def _insert_deliveries(
    db: Database, conn: Connection, event: StoredEvent, subscription_ids: Sequence[str]
) -> None:
    """Queue ``event`` again for these subscriptions: behind what is unfinished of its
    key on FIFO ones, as if emitted now."""
    db.lock_event_stream(conn, event.tenant_id)
    ids = {f"s{i}": sub_id for i, sub_id in enumerate(subscription_ids)}
    which = f"s.id IN ({', '.join(':' + name for name in ids)}) AND {EVENT_KEPT}"
    for sql in db.queue_again(which):
        conn.execute(text(sql), {**fan_out_params(event), **ids})
    db.announce_work(conn)


EVENT_KEPT = "EXISTS (SELECT 1 FROM events WHERE seq = :seq)"
"""A re-queued event still exists: reading it orders the re-queue after retention's drop
of its partition (which locks the table), so no delivery outlives its event."""


class _TransactionOutbox:
    def __init__(self, db: Database, conn: Connection, added: list[StoredEvent]) -> None:
        self._db = db
        self._conn = conn
        self._added = added

    def add(self, event: StoredEvent) -> StoredEvent:
        stored = add_event(self._db, self._conn, event, None)
        self._added.append(stored)
        return stored


def _event_by_key(conn: Connection, tenant_id: str, key: str) -> StoredEvent | None:
    query = select(events).where(events.c.tenant_id == tenant_id, events.c.idempotency_key == key)
    row = conn.execute(query).mappings().first()
    return event_of(row) if row is not None else None
