"""One storage error the layers above understand: the database is out of reach for now.

Drivers say it many ways (a refused socket, asyncpg's connection errors, a server shutting
down, SQLite's locked, read-only or full file, SQLAlchemy wrapping any of these). Every
store translates them here, at its boundary, into ``StorageUnavailable``: the API answers
it with 503 and ``Retry-After``, background loops wait and retry, and nothing above
storage imports a driver to tell an outage from a bug.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import asyncpg
import structlog
from sqlalchemy import exc as sa

P = ParamSpec("P")
T = TypeVar("T")

RETRY_AFTER_SECONDS = 5

log = structlog.get_logger("tidings.outage")


class StorageUnavailable(Exception):
    """The database cannot be reached, or cannot take writes, now; retry later."""


_ASYNCPG_OUTAGES = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # a replica, mid-failover
    asyncpg.exceptions.InterfaceError,  # the connection is closed
    asyncpg.exceptions.TargetServerAttributeNotMatched,  # no host takes writes, mid-failover
    # A pooled connection the dying primary sent an error while it sat idle: asyncpg waits
    # for a "ready" that never comes and refuses the next statement before sending it
    # ("cannot switch to state 12; another operation (2) is in progress", seen in the
    # failover test). Nothing was sent; ``hot_connection`` closes the connection.
    asyncpg.exceptions.InternalClientError,
)
_SQLITE_OUTAGES = (
    "database is locked",
    "disk i/o error",
    "database or disk is full",
    "attempt to write a readonly database",
    "unable to open database file",
    "readonly",
)


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) says the database is out of reach, as opposed
    to a bug or a bad statement."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (StorageUnavailable, OSError, *_ASYNCPG_OUTAGES)):
            return True
        if isinstance(current, sqlite3.OperationalError):
            message = str(current).lower()
            return any(text in message for text in _SQLITE_OUTAGES)
        if isinstance(current, sa.DBAPIError) and current.connection_invalidated:
            return True
        nested = current.orig if isinstance(current, sa.DBAPIError) else None
        current = nested or current.__cause__ or current.__context__
    return False


def translated(
    method: Callable[P, Awaitable[T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Raise ``StorageUnavailable`` for a driver's outage error, anything else as it is."""

    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except StorageUnavailable:
            raise
        except Exception as exc:
            if is_outage(exc):
                raise StorageUnavailable(f"{type(exc).__name__}: {exc}"[:300]) from exc
            raise

    return call


# --- riding out an outage -----------------------------------------------------------
# Long-running loops keep one ``Outage`` per thing they depend on: it logs the outage
# once, when it starts and when it ends, and paces retries with a capped backoff.

FIRST_DELAY = 0.05
MAX_DELAY = 2.0
"""Retries during an outage are at most this far apart, so work resumes within about
this long of the dependency's return."""


class Outage:
    def __init__(self, what: str, first: float = FIRST_DELAY, cap: float = MAX_DELAY) -> None:
        self.what = what
        self._first = first
        self._cap = cap
        self._delay = first
        self.since: float | None = None
        self.failures = 0

    @property
    def ongoing(self) -> bool:
        return self.since is not None

    def noted(self, exc: BaseException) -> None:
        """A failure: logged when it starts an outage, counted otherwise."""
        self.failures += 1
        if self.since is None:
            self.since = time.monotonic()
            log.warning(
                "dependency_unavailable",
                what=self.what,
                error=f"{type(exc).__name__}: {exc}"[:300],
            )

    async def failed(self, exc: BaseException, stop: asyncio.Event | None = None) -> None:
        """Note the failure, then wait before the caller retries (less if ``stop`` is set)."""
        self.noted(exc)
        delay, self._delay = self._delay, min(self._cap, self._delay * 2)
        if stop is None:
            await asyncio.sleep(delay)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)

    def succeeded(self) -> None:
        if self.since is not None:
            log.info(
                "dependency_back",
                what=self.what,
                seconds=round(time.monotonic() - self.since, 1),
                failures=self.failures,
            )
        self.since = None
        self.failures = 0
        self._delay = self._first
