"""What a SQL connector provides to the shared stores: transactions, and waking workers.

Every transaction is a plain synchronous function of a SQLAlchemy ``Connection``;
connectors decide how to run it: ``sqlite.py`` on a dedicated thread with the standard
library driver (one hop per transaction, not per statement), ``postgres.py`` on asyncpg
through ``AsyncConnection.run_sync``. Connectors also run the hot path (emit, claim,
record) on their drivers directly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Connection, TextClause, text

from tidings.storage import migrate as migrations

T = TypeVar("T")


class Database:
    FAN_OUT: TextClause
    """One INSERT ... SELECT queueing a delivery for every enabled subscription whose
    patterns match ``:type``; the connector writes it in its dialect's JSON functions.
    It mirrors ``EventPattern.matches`` (a test holds the two to the same answers)."""

    FAN_OUT_NOTIFIES = False
    """Whether ``FAN_OUT`` itself tells other processes about the new work."""

    def __init__(self) -> None:
        self._work = asyncio.Event()
        self.woken = False

    async def write(self, tx: Callable[[Connection], T]) -> T:
        """Run ``tx`` in one write transaction."""
        raise NotImplementedError

    async def read(self, tx: Callable[[Connection], T]) -> T:
        raise NotImplementedError

    async def migrate(self) -> None:
        await self.write(migrations.upgrade_connection)

    async def ping(self) -> None:
        await self.read(lambda conn: conn.execute(text("SELECT 1")).scalar_one())

    async def close(self) -> None:
        raise NotImplementedError

    def lock_event_stream(self, conn: Connection, tenant_id: str) -> None:
        """Make a tenant's events commit in ``seq`` order, so cursors never skip one.

        A no-op here: SQLite's ``BEGIN IMMEDIATE`` already serialises writers.
        """

    def announce_work(self, conn: Connection) -> None:
        """Tell other processes, once this transaction commits, that deliveries are due."""

    def notify_work(self) -> None:
        """Wake this process's dispatcher."""
        self._work.set()

    async def wait_for_work(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._work.wait(), seconds)
        self.woken = self._work.is_set()
        self._work.clear()
