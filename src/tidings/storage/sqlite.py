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
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, select, text
from sqlalchemy.engine import make_url

from tidings.domain.deliveries import DeliveryStatus
from tidings.storage.schema import deliveries
from tidings.storage.sql import SQLStore

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
            deliveries.c.due_ms <= int(time.time() * 1000),
        )
        .limit(1)
    )
    return conn.execute(query).first() is not None


class SQLiteStore(SQLStore):
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
    def from_url(cls, url: str) -> SQLiteStore:
        parsed = make_url(url).set(drivername="sqlite+pysqlite")
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        return cls(
            _engine(parsed, immediate=True, pool_size=1, checkpoints=False),
            _engine(parsed, immediate=False, pool_size=READERS),
        )

    async def _write(self, tx: Callable[[Connection], T]) -> T:
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
                await self._read(
                    lambda conn: conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").all()
                )

    async def _read(self, tx: Callable[[Connection], T]) -> T:
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
            if self._woken or await self._read(_due_now):
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
