"""Drop repeated deliveries: tidings delivers at least once, and every repeat has the same id.

Three stores behind one protocol. ``MemoryDedupStore`` is per process; ``SQLiteDedupStore``
is shared by the processes of one machine (standard library); ``RedisDedupStore`` is
shared by many machines (needs the ``redis`` package, imported only when used).
"""

from __future__ import annotations

import importlib
import sqlite3
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

DEFAULT_TTL = 7 * 24 * 3600
"""Seconds an id is remembered by the shared stores: well past tidings' 24 h retry window."""


@runtime_checkable
class DedupStore(Protocol):
    def seen_before(self, event_id: str) -> bool:
        """True if ``event_id`` was already seen; otherwise mark it seen and return False.

        Check and mark are one atomic step, so two concurrent deliveries of the same
        event cannot both get False.
        """
        ...


class MemoryDedupStore:
    """Remembers the last ``capacity`` event ids seen; ``first_time(id)`` is True once per id.

    Per process and lost on restart; thread-safe.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, event_id: str) -> bool:
        with self._lock:
            if event_id in self._seen:
                self._seen.move_to_end(event_id)
                return False
            self._seen[event_id] = None
            if len(self._seen) > self._capacity:
                self._seen.popitem(last=False)
            return True

    def seen_before(self, event_id: str) -> bool:
        return not self.first_time(event_id)


Deduplicator = MemoryDedupStore
"""The original name of the in-memory store."""


class SQLiteDedupStore:
    """Event ids in a SQLite file, shared by every process that opens the same path.

    ``INSERT OR IGNORE`` on the primary key is the atomic check-and-mark. Ids older than
    ``ttl`` seconds are pruned every ``prune_every`` new ids (or call ``prune()``).
    """

    def __init__(
        self,
        path: str | Path,
        ttl: float = DEFAULT_TTL,
        table: str = "tidings_seen_events",
        prune_every: int = 1000,
    ) -> None:
        if not table.isidentifier():
            raise ValueError("table must be a plain SQL identifier")
        self._ttl = ttl
        self._table = table
        self._prune_every = prune_every
        self._since_prune = 0
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            str(path), timeout=30, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            f"CREATE TABLE IF NOT EXISTS {table}"
            " (event_id TEXT PRIMARY KEY, seen_at REAL NOT NULL) WITHOUT ROWID"
        )
        self._db.execute(f"CREATE INDEX IF NOT EXISTS {table}_seen_at ON {table} (seen_at)")

    def seen_before(self, event_id: str) -> bool:
        with self._lock:
            cursor = self._db.execute(
                f"INSERT OR IGNORE INTO {self._table} (event_id, seen_at) VALUES (?, ?)",
                (event_id, time.time()),
            )
            inserted = cursor.rowcount == 1
        if inserted:
            self._count_and_maybe_prune()
        return not inserted

    def prune(self, now: float | None = None) -> int:
        """Forget ids seen more than ``ttl`` seconds before ``now``; returns how many."""
        cutoff = (time.time() if now is None else now) - self._ttl
        with self._lock:
            cursor = self._db.execute(f"DELETE FROM {self._table} WHERE seen_at < ?", (cutoff,))
            return cursor.rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _count_and_maybe_prune(self) -> None:
        self._since_prune += 1
        if self._since_prune >= self._prune_every:
            self._since_prune = 0
            self.prune()


class RedisClient(Protocol):
    """The one method used of ``redis.Redis`` (or any client with its ``set``)."""

    def set(self, name: str, value: str, *, ex: int, nx: bool) -> Any: ...


class RedisDedupStore:
    """Event ids as Redis keys that expire after ``ttl`` seconds; ``SET NX EX`` is atomic."""

    def __init__(
        self, client: RedisClient, ttl: int = DEFAULT_TTL, prefix: str = "tidings:seen:"
    ) -> None:
        self._client = client
        self._ttl = ttl
        self._prefix = prefix

    @classmethod
    def from_url(cls, url: str, ttl: int = DEFAULT_TTL, prefix: str = "tidings:seen:") -> Self:
        """Connect with ``redis.Redis.from_url`` (``pip install redis``)."""
        redis: Any = importlib.import_module("redis")
        return cls(redis.Redis.from_url(url), ttl=ttl, prefix=prefix)

    def seen_before(self, event_id: str) -> bool:
        created = self._client.set(self._prefix + event_id, "1", ex=self._ttl, nx=True)
        return not created
