"""The PostgreSQL connector: many API processes and workers share one database.

* Claims use ``FOR UPDATE SKIP LOCKED`` (rendered by the shared claim query), so
  concurrent workers never take the same row.
* New work is announced with ``NOTIFY`` inside the inserting transaction (delivered on
  commit); each process LISTENs on one dedicated connection and wakes its dispatcher.
  The dispatcher's short poll remains the fallback if a notification is missed.
* Emits of one tenant serialise on a transaction-level advisory lock, so events commit
  in ``seq`` order and a cursor past ``seq`` N can never later miss an event below N.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TypeVar

import asyncpg
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tidings.storage.sql import SQLStore

CHANNEL = "tidings_work"


T = TypeVar("T")


class PostgresStore(SQLStore):
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
        self._listen_lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        parsed = make_url(url)
        engine = create_async_engine(
            parsed.set(drivername="postgresql+asyncpg"), pool_size=10, max_overflow=10
        )
        dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        return cls(engine, listen_dsn=dsn)

    async def _write(self, tx: Callable[[Connection], T]) -> T:
        async with self.engine.begin() as conn:
            return await conn.run_sync(tx)

    async def _read(self, tx: Callable[[Connection], T]) -> T:
        async with self.engine.connect() as conn:
            return await conn.run_sync(tx)

    def _lock_event_stream(self, conn: Connection, tenant_id: str) -> None:
        conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": "tidings.events:" + tenant_id},
        )

    def _announce_work(self, conn: Connection) -> None:
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

    async def close(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
        await self.engine.dispose()
