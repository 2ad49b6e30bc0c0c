"""The PostgreSQL connector: many API processes and workers share one database.

* Claims use ``FOR UPDATE SKIP LOCKED`` (rendered by the shared claim query), so
  concurrent workers never take the same row.
* New work is announced with ``NOTIFY`` inside the inserting transaction (delivered on
  commit); each process LISTENs on one dedicated connection and wakes its dispatcher.
  The dispatcher's short poll remains the fallback if a notification is missed.
* Emits of one tenant serialise on a transaction-level advisory lock, so events commit
  in ``seq`` order and a cursor past ``seq`` N can never later miss an event below N.
* The hot path (emit, claim, record) runs on asyncpg directly, with the same SQL the
  shared code states: profiling showed SQLAlchemy's async adaptation costing more CPU
  per event than the database work itself. Everything else goes through ``SQLStore``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tidings.domain.clock import now_ms
from tidings.domain.deliveries import DeliveryStatus
from tidings.storage.interfaces import unbounded_room
from tidings.storage.records import AttemptOutcome, ClaimedDelivery, StoredEvent
from tidings.storage.sql import Database, SQLStore
from tidings.storage.sql.events import SQLEvents
from tidings.storage.sql.queue import (
    CLAIM_SCAN_FACTOR,
    SQLQueue,
    attempt_row,
    claimed_deliveries,
    delivery_update,
    pick_claims,
    streak_changes,
)

CHANNEL = "tidings_work"


T = TypeVar("T")


class PostgresDatabase(Database):
    FAN_OUT_NOTIFIES = True
    FAN_OUT = text(
        f"""
        WITH queued AS (
        INSERT INTO deliveries (tenant_id, event_seq, subscription_id, status, attempts,
                                due_ms, created_ms, updated_ms)
        SELECT s.tenant_id, :seq, s.id, 'pending', 0, :now, :now, :now
        FROM subscriptions AS s
        WHERE s.tenant_id = :tenant AND s.enabled AND EXISTS (
            SELECT 1 FROM json_array_elements_text(s.event_types::json) AS p(v)
            WHERE p.v = '*' OR p.v = :type
               OR (right(p.v, 2) = '.*' AND starts_with(:type, left(p.v, -1))))
        RETURNING 1)
        SELECT pg_notify('{CHANNEL}', '') FROM queued LIMIT 1
        """
    )

    def __init__(self, engine: AsyncEngine, listen_dsn: str) -> None:
        super().__init__()
        self.engine = engine
        self._listen_dsn = listen_dsn
        self._listener: asyncpg.Connection | None = None
        self._pool: asyncpg.Pool | None = None
        self._listen_lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str) -> PostgresDatabase:
        parsed = make_url(url)
        engine = create_async_engine(
            parsed.set(drivername="postgresql+asyncpg"), pool_size=10, max_overflow=10
        )
        dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        return cls(engine, listen_dsn=dsn)

    async def write(self, tx: Callable[[Connection], T]) -> T:
        async with self.engine.begin() as conn:
            return await conn.run_sync(tx)

    async def read(self, tx: Callable[[Connection], T]) -> T:
        async with self.engine.connect() as conn:
            return await conn.run_sync(tx)

    def lock_event_stream(self, conn: Connection, tenant_id: str) -> None:
        conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": "tidings.events:" + tenant_id},
        )

    def announce_work(self, conn: Connection) -> None:
        conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})

    async def wait_for_work(self, seconds: float) -> None:
        await self._ensure_listening()
        await super().wait_for_work(seconds)

    async def _ensure_listening(self) -> None:
        async with self._listen_lock:
            if self._listener is not None and not self._listener.is_closed():
                return
            try:
                self._listener = await asyncpg.connect(self._listen_dsn)
                await self._listener.add_listener(CHANNEL, self._on_notify)
            except (OSError, asyncpg.PostgresError):
                self._listener = None  # fall back to polling; retried on the next wait

    def _on_notify(self, *_: object) -> None:
        self.notify_work()

    async def hot_pool(self) -> asyncpg.Pool:
        """asyncpg's own pool, for the hot path."""
        if self._pool is None:
            self._pool = await asyncpg.create_pool(self._listen_dsn, min_size=1, max_size=10)
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
        await self.engine.dispose()


# --- the hot path, on asyncpg ---------------------------------------------------------


class PostgresEvents(SQLEvents):
    def __init__(self, db: PostgresDatabase) -> None:
        super().__init__(db)
        self._pg = db

    async def insert_event(
        self, event: StoredEvent, idempotency_key: str | None
    ) -> tuple[StoredEvent, bool]:
        if idempotency_key is not None:  # the rarer path keeps its race handling
            return await super().insert_event(event, idempotency_key)
        pool = await self._pg.hot_pool()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(_LOCK_STREAM, "tidings.events:" + event.tenant_id)
            seq = await conn.fetchval(
                _INSERT_EVENT,
                event.id,
                event.tenant_id,
                event.type,
                event.created_ms,
                event.body,
                event.request_hash,
            )
            values = {"tenant": event.tenant_id, "seq": seq, "type": event.type, "now": now_ms()}
            await conn.execute(_FAN_OUT, *_ordered(values, _FAN_OUT_PARAMS))
        self._db.notify_work()
        return dataclasses.replace(event, seq=seq), True


class PostgresQueue(SQLQueue):
    def __init__(self, db: PostgresDatabase) -> None:
        super().__init__(db)
        self._db: PostgresDatabase = db

    async def claim_due(
        self, limit: int, lease_ms: int, now_ms: int, room: Callable[[str], int] = unbounded_room
    ) -> list[ClaimedDelivery]:
        token = uuid.uuid4().hex
        pool = await self._db.hot_pool()
        async with pool.acquire() as conn, conn.transaction():
            scanned = await conn.fetch(_SCAN, now_ms, limit * CLAIM_SCAN_FACTOR)
            chosen = pick_claims([(r["id"], r["subscription_id"]) for r in scanned], room, limit)
            if not chosen:
                return []
            claimed = {
                r["id"]: r["attempts"]
                for r in await conn.fetch(_LEASE, now_ms + lease_ms, token, chosen)
            }
            rows = await conn.fetch(_DETAILS, list(claimed))
            disabled = [r["id"] for r in rows if not r["enabled"]]
            if disabled:
                await conn.execute(_CANCEL, disabled)
        return claimed_deliveries(rows, claimed, token)

    async def record(self, outcomes: Sequence[AttemptOutcome]) -> dict[str, int]:
        if not outcomes:
            return {}
        pool = await self._db.hot_pool()
        async with pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                _INSERT_ATTEMPT, [_ordered(attempt_row(o), _ATTEMPT_COLUMNS) for o in outcomes]
            )
            await conn.executemany(
                _RECORD, [_ordered(delivery_update(o), _RECORD_PARAMS) for o in outcomes]
            )
            streaks: dict[str, int] = {}
            for sub_id, failures in streak_changes(outcomes):
                if failures is None:
                    await conn.execute(_RESET_STREAK, sub_id)
                else:
                    streaks[sub_id] = await conn.fetchval(_ADD_FAILURES, sub_id, failures)
        return streaks


def open_postgres(url: str) -> SQLStore:
    db = PostgresDatabase.from_url(url)
    return SQLStore.build(db, PostgresEvents(db), PostgresQueue(db))


def _numbered(sql: str) -> tuple[str, list[str]]:
    """``:name`` parameters to asyncpg's ``$n``; returns the SQL and the names in order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return re.sub(r"(?<!:):([a-z_]+)", number, sql), names


def _ordered(values: dict[str, Any], names: Sequence[str]) -> tuple[Any, ...]:
    return tuple(values[name] for name in names)


_PENDING = DeliveryStatus.PENDING.value
_LOCK_STREAM = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"
_INSERT_EVENT = """
    INSERT INTO events (id, tenant_id, type, created_ms, body, request_hash)
    VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq
"""
_FAN_OUT, _FAN_OUT_PARAMS = _numbered(PostgresDatabase.FAN_OUT.text)
_SCAN = f"""
    SELECT id, subscription_id FROM deliveries
    WHERE status = '{_PENDING}' AND due_ms <= $1
    ORDER BY due_ms LIMIT $2 FOR UPDATE SKIP LOCKED
"""
_LEASE = """
    UPDATE deliveries SET due_ms = $1, claim_token = $2
    WHERE id = ANY($3::bigint[]) RETURNING id, attempts
"""
_DETAILS = """
    SELECT d.id, e.id AS event_id, e.tenant_id, e.created_ms, e.body, d.subscription_id,
           s.url, s.secret_enc, s.previous_secret_enc, s.previous_secret_expires_ms,
           coalesce(s.enabled, false) AS enabled, s.max_concurrency,
           s.rate_limit
    FROM deliveries AS d JOIN events AS e ON e.seq = d.event_seq
    LEFT JOIN subscriptions AS s ON s.id = d.subscription_id
    WHERE d.id = ANY($1::bigint[])
"""
_CANCEL = f"""
    UPDATE deliveries SET status = '{DeliveryStatus.CANCELLED.value}', claim_token = NULL
    WHERE id = ANY($1::bigint[])
"""
_ATTEMPT_COLUMNS = (
    "delivery_id",
    "tenant_id",
    "event_id",
    "subscription_id",
    "attempt",
    "outcome",
    "status_code",
    "elapsed_ms",
    "response_body",
    "error",
    "created_ms",
)
_INSERT_ATTEMPT = (
    f"INSERT INTO attempts ({', '.join(_ATTEMPT_COLUMNS)}) VALUES "
    f"({', '.join(f'${n}' for n in range(1, len(_ATTEMPT_COLUMNS) + 1))})"
)
_RECORD_PARAMS = ("b_status", "b_attempt", "b_due", "b_code", "b_now", "b_id", "b_token")
_RECORD = """
    UPDATE deliveries SET status = $1, attempts = $2, due_ms = $3, claim_token = NULL,
                          last_status_code = $4, updated_ms = $5
    WHERE id = $6 AND claim_token = $7
"""
_RESET_STREAK = """
    UPDATE subscriptions SET consecutive_failures = 0
    WHERE id = $1 AND consecutive_failures <> 0
"""
_ADD_FAILURES = """
    UPDATE subscriptions SET consecutive_failures = consecutive_failures + $2
    WHERE id = $1 RETURNING consecutive_failures
"""
