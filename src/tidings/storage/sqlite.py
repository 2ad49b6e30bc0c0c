"""The SQLite connector: the embedded default, one file, no other process.

SQLite allows one writer at a time. Inside a process all writes share one pooled
connection, so they queue in asyncio instead of spinning on SQLITE_BUSY; across
processes (``tidings serve`` plus ``tidings worker``) ``BEGIN IMMEDIATE`` and a busy
timeout serialise them. Reads use their own connections: WAL lets them run alongside.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tidings.storage.sql import SQLStore

BUSY_TIMEOUT_MS = 30_000


def _configure(engine: AsyncEngine, immediate: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy so "begin" below decides how to begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class SQLiteStore(SQLStore):
    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        parsed = make_url(url).set(drivername="sqlite+aiosqlite")
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        writer = create_async_engine(parsed, pool_size=1, max_overflow=0, pool_timeout=60)
        reader = create_async_engine(parsed, pool_size=4, max_overflow=4)
        _configure(writer, immediate=True)
        _configure(reader, immediate=False)
        return cls(writer, reader)
