"""The SQLite connector: the embedded default, one file, no other process.

SQLite allows one writer at a time, so every write transaction runs on one dedicated
thread with one connection (``BEGIN IMMEDIATE``): writers queue in Python instead of
spinning on SQLITE_BUSY, and a whole transaction costs one hop between the event loop
and that thread. Reads run on a small pool of their own; WAL lets them proceed while a
write is in progress. Across processes (``serve`` plus ``worker``) the busy timeout
serialises writers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, select, text
from sqlalchemy.engine import make_url

from tidings.domain.clock import now_ms
from tidings.domain.deliveries import DeliveryStatus
from tidings.storage.interfaces import unbounded_room
from tidings.storage.records import AttemptOutcome, ClaimedDelivery, StoredEvent
from tidings.storage.schema import deliveries
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

T = TypeVar("T")

BUSY_TIMEOUT_MS = 30_000
PROBE_INTERVAL = 0.05
CHECKPOINT_INTERVAL = 1.0
READERS = 4


def _engine(url: Any, *, immediate: bool, pool_size: int, checkpoints: bool = True) -> Engine:
    engine = create_engine(url, pool_size=pool_size, max_overflow=0, pool_timeout=60)

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy so "begin" below decides how to begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if not checkpoints:
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _due_now(conn: Connection) -> bool:
    query = (
        select(deliveries.c.id)
        .where(
            deliveries.c.status == DeliveryStatus.PENDING.value,
            deliveries.c.due_ms <= now_ms(),
        )
        .limit(1)
    )
    return conn.execute(query).first() is not None


def _driver(conn: Connection) -> sqlite3.Connection:
    driver: sqlite3.Connection = conn.connection.driver_connection  # type: ignore[assignment]
    return driver


_PENDING = DeliveryStatus.PENDING.value
_INSERT_EVENT = (
    "INSERT INTO events (id, tenant_id, type, created_ms, body, request_hash) "
    "VALUES (?, ?, ?, ?, ?, ?) RETURNING seq"
)
_SCAN = (
    f"SELECT id, subscription_id FROM deliveries WHERE status = '{_PENDING}' AND due_ms <= ? "
    "ORDER BY due_ms LIMIT ?"
)
_LEASE = (
    "UPDATE deliveries SET due_ms = ?, claim_token = ? WHERE id IN ({marks}) RETURNING id, attempts"
)
_DETAILS = """
    SELECT d.id, e.id AS event_id, e.tenant_id, e.created_ms, e.body, d.subscription_id,
           s.url, s.secret_enc, s.previous_secret_enc, s.previous_secret_expires_ms,
           coalesce(s.enabled, 0) AS enabled, s.max_concurrency,
           s.rate_limit
    FROM deliveries AS d JOIN events AS e ON e.seq = d.event_seq
    LEFT JOIN subscriptions AS s ON s.id = d.subscription_id
    WHERE d.id IN ({marks})
"""
_CANCEL = (
    f"UPDATE deliveries SET status = '{DeliveryStatus.CANCELLED.value}', claim_token = NULL "
    "WHERE id IN ({marks})"
)
_INSERT_ATTEMPT = """
    INSERT INTO attempts (delivery_id, tenant_id, event_id, subscription_id, attempt, outcome,
                          status_code, elapsed_ms, response_body, error, created_ms)
    VALUES (:delivery_id, :tenant_id, :event_id, :subscription_id, :attempt, :outcome,
            :status_code, :elapsed_ms, :response_body, :error, :created_ms)
"""
_RECORD = """
    UPDATE deliveries SET status = :b_status, attempts = :b_attempt, due_ms = :b_due,
                          claim_token = NULL, last_status_code = :b_code, updated_ms = :b_now
    WHERE id = :b_id AND claim_token = :b_token
"""
_RESET_STREAK = (
    "UPDATE subscriptions SET consecutive_failures = 0 WHERE id = ? AND consecutive_failures <> 0"
)
_ADD_FAILURES = (
    "UPDATE subscriptions SET consecutive_failures = consecutive_failures + ? "
    "WHERE id = ? RETURNING consecutive_failures"
)


class SQLiteDatabase(Database):
    FAN_OUT = text(
        """
        INSERT INTO deliveries (tenant_id, event_seq, subscription_id, status, attempts,
                                due_ms, created_ms, updated_ms)
        SELECT s.tenant_id, :seq, s.id, 'pending', 0, :now, :now, :now
        FROM subscriptions AS s
        WHERE s.tenant_id = :tenant AND s.enabled = 1 AND EXISTS (
            SELECT 1 FROM json_each(s.event_types) AS p
            WHERE p.value = '*' OR p.value = :type
               OR (substr(p.value, -2) = '.*'
                   AND substr(:type, 1, length(p.value) - 1)
                       = substr(p.value, 1, length(p.value) - 1)))
        """
    )

    def __init__(self, writer: Engine, reader: Engine) -> None:
        super().__init__()
        self.writer = writer
        self.reader = reader
        self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="tidings-sqlite-write")
        self._read_threads = ThreadPoolExecutor(READERS, thread_name_prefix="tidings-sqlite-read")
        self._checkpointer: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str) -> SQLiteDatabase:
        parsed = make_url(url).set(drivername="sqlite+pysqlite")
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        return cls(
            _engine(parsed, immediate=True, pool_size=1, checkpoints=False),
            _engine(parsed, immediate=False, pool_size=READERS),
        )

    async def write(self, tx: Callable[[Connection], T]) -> T:
        def run() -> T:
            with self.writer.begin() as conn:
                return tx(conn)

        if self._checkpointer is None:
            self._checkpointer = asyncio.create_task(self._checkpoint_loop())
        return await asyncio.get_running_loop().run_in_executor(self._write_thread, run)

    async def _checkpoint_loop(self) -> None:
        """Copy the WAL back into the database file off the write path.

        The writer's automatic checkpoint would run (and fsync) inside whichever commit
        crosses the threshold, stalling every queued write behind it; a PASSIVE
        checkpoint on a reader connection never blocks writers.
        """
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL)
            with contextlib.suppress(Exception):
                await self.read(
                    lambda conn: conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").all()
                )

    async def read(self, tx: Callable[[Connection], T]) -> T:
        def run() -> T:
            with self.reader.connect() as conn:
                return tx(conn)

        return await asyncio.get_running_loop().run_in_executor(self._read_threads, run)

    async def wait_for_work(self, seconds: float) -> None:
        """SQLite has no NOTIFY: besides this process's own signal, look every
        ``PROBE_INTERVAL`` for rows that another process (``tidings serve`` beside a
        ``tidings worker``) made due, with a read that takes no write lock."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            await super().wait_for_work(min(PROBE_INTERVAL, left))
            if self.woken or await self.read(_due_now):
                return

    async def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpointer
        self._write_thread.shutdown(wait=True)
        self._read_threads.shutdown(wait=True)
        self.writer.dispose()
        self.reader.dispose()


# --- the hot path, on the sqlite3 driver directly -----------------------------------------
# Same SQL as the shared code; skipping SQLAlchemy's per-statement work halves the
# writer thread's CPU per event (measured with py-spy under bench/benchmark.py).


class SQLiteEvents(SQLEvents):
    async def insert_event(
        self, event: StoredEvent, idempotency_key: str | None
    ) -> tuple[StoredEvent, bool]:
        if idempotency_key is not None:  # the rarer path keeps its race handling
            return await super().insert_event(event, idempotency_key)

        def tx(conn: Connection) -> int:
            db = _driver(conn)
            row = db.execute(
                _INSERT_EVENT,
                (
                    event.id,
                    event.tenant_id,
                    event.type,
                    event.created_ms,
                    event.body,
                    event.request_hash,
                ),
            ).fetchone()
            seq = int(row[0])
            fan_out = {"tenant": event.tenant_id, "seq": seq, "type": event.type, "now": now_ms()}
            db.execute(SQLiteDatabase.FAN_OUT.text, fan_out)
            return seq

        seq = await self._db.write(tx)
        self._db.notify_work()
        return dataclasses.replace(event, seq=seq), True


class SQLiteQueue(SQLQueue):
    async def claim_due(
        self, limit: int, lease_ms: int, now_ms: int, room: Callable[[str], int] = unbounded_room
    ) -> list[ClaimedDelivery]:
        token = uuid.uuid4().hex

        def tx(conn: Connection) -> tuple[dict[int, int], list[sqlite3.Row]]:
            db = _driver(conn)
            scanned = db.execute(_SCAN, (now_ms, limit * CLAIM_SCAN_FACTOR)).fetchall()
            chosen = pick_claims(scanned, room, limit)
            if not chosen:
                return {}, []
            marks = ",".join("?" * len(chosen))
            lease = _LEASE.format(marks=marks)
            claimed = dict(db.execute(lease, (now_ms + lease_ms, token, *chosen)).fetchall())
            cursor = db.cursor()
            cursor.row_factory = sqlite3.Row
            rows = cursor.execute(_DETAILS.format(marks=marks), chosen).fetchall()
            disabled = [row["id"] for row in rows if not row["enabled"]]
            if disabled:
                db.execute(_CANCEL.format(marks=",".join("?" * len(disabled))), disabled)
            return claimed, rows

        claimed, rows = await self._db.write(tx)
        return claimed_deliveries(rows, claimed, token)

    async def record(self, outcomes: Sequence[AttemptOutcome]) -> dict[str, int]:
        if not outcomes:
            return {}

        def tx(conn: Connection) -> dict[str, int]:
            db = _driver(conn)
            db.executemany(_INSERT_ATTEMPT, [attempt_row(o) for o in outcomes])
            db.executemany(_RECORD, [delivery_update(o) for o in outcomes])
            streaks: dict[str, int] = {}
            for sub_id, failures in streak_changes(outcomes):
                if failures is None:
                    db.execute(_RESET_STREAK, (sub_id,))
                else:
                    row = db.execute(_ADD_FAILURES, (failures, sub_id)).fetchone()
                    streaks[sub_id] = int(row[0])
            return streaks

        return await self._db.write(tx)


def open_sqlite(url: str) -> SQLStore:
    db = SQLiteDatabase.from_url(url)
    return SQLStore.build(db, SQLiteEvents(db), SQLiteQueue(db))
