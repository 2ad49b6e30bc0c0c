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
import functools
from collections.abc import Callable, Sequence
from typing import TypeVar

from sqlalchemy import Connection, text

from tidings.storage import migrate as migrations
from tidings.storage.schema import CLAIMABLE, UNFINISHED
from tidings.storage.sql.filtering import FilterBooks

T = TypeVar("T")

QUEUE_ROWS = f"""
    INSERT INTO deliveries (tenant_id, event_seq, subscription_id, status, attempts, due_ms,
                            created_ms, updated_ms, ordering_key, position, blocked)
    SELECT tenant_id, :seq, id, status, 0, :now, :now, :now, ordering_key,
           CASE WHEN ordering_key IS NOT NULL THEN coalesce(last, -1) + 1 END,
           CASE WHEN last IS NOT NULL THEN TRUE ELSE FALSE END
    FROM (
        SELECT s.tenant_id, s.id,
               CASE WHEN s.enabled THEN 'pending' ELSE 'paused' END AS status,
               CASE WHEN s.ordering = 'fifo' THEN CAST(:key AS TEXT) END AS ordering_key,
               CASE WHEN s.ordering = 'fifo' THEN (
                   SELECT max(p.position) FROM deliveries AS p
                   WHERE p.subscription_id = s.id AND p.ordering_key IS NOT NULL
                     AND p.ordering_key = :key AND p.{UNFINISHED}) END AS last
        FROM subscriptions AS s
        WHERE s.tenant_id = :tenant AND {{which}}
    ) AS matched
"""
"""Queue one event for the subscriptions ``{which}`` selects: pending, or paused if the
subscription is disabled; on FIFO subscriptions after the key's last unfinished delivery,
and blocked behind it if there is one."""

WAKE_LANES = f"""
    UPDATE lanes SET next_due_ms = :now
    WHERE (next_due_ms IS NULL OR next_due_ms > :now) AND subscription_id IN (
        SELECT subscription_id FROM deliveries WHERE event_seq = :seq AND {CLAIMABLE})
"""
WANTS_EVENT = "(s.enabled OR s.disabled_reason IN ('breaker', 'manual')) AND {matches}"


class Database:
    MATCHES: str
    """A condition on subscription ``s``: one of its patterns matches ``:type``. The
    connector writes it in its dialect's JSON functions; it mirrors
    ``EventPattern.matches`` (a test holds the two to the same answers)."""
    MATCHED_IDS: str
    """A query of the ids in ``:matched``, a JSON array, in the connector's dialect."""

    @functools.cached_property
    def FAN_OUT(self) -> tuple[str, ...]:
        """The statements that queue a new event for every unfiltered subscription that
        wants it: what an emit runs when no filtered subscription takes the event. The
        partial index ``ix_subscriptions_unfiltered`` finds them; filtered ones (decided
        in Python, see ``sql/filtering.py``) are not even read."""
        return self.queue_again(f"s.filter IS NULL AND {WANTS_EVENT.format(matches=self.MATCHES)}")

    @functools.cached_property
    def FAN_OUT_MATCHED(self) -> tuple[str, ...]:
        """``FAN_OUT``, and for the filtered subscriptions in ``:matched`` (those whose
        filter the envelope passed)."""
        chosen = f"""s.id IN (
            SELECT u.id FROM subscriptions AS u WHERE u.tenant_id = :tenant AND u.filter IS NULL
            UNION ALL {self.MATCHED_IDS})"""
        return self.queue_again(f"{chosen} AND {WANTS_EVENT.format(matches=self.MATCHES)}")

    def fan_out(self, matched: Sequence[str]) -> tuple[str, ...]:
        return self.FAN_OUT_MATCHED if matched else self.FAN_OUT

    def queue_again(self, which: str) -> tuple[str, ...]:
        """The statements that queue an event for the subscriptions ``which`` selects
        (parameters ``:tenant :seq :type :key :now``) and wake their lanes."""
        return (QUEUE_ROWS.format(which=which), WAKE_LANES)

    def __init__(self) -> None:
        self._work = asyncio.Event()
        self.woken = False
        self.filters = FilterBooks()
        """Each tenant's filtered subscriptions, compiled (see ``sql/filtering.py``)."""

    async def write(
        self, tx: Callable[[Connection], T], *, alone: bool = False, brief: bool = False
    ) -> T:
        """Run ``tx`` in one write transaction; ``alone``: in one that runs nothing else
        (a connector may commit several writes' transactions together otherwise);
        ``brief``: a few statements on indexed rows, which a connector may run on the
        event loop rather than on a thread (SQLite does)."""
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
        self.woken = self.forget_work()

    def forget_work(self) -> bool:
        noticed = self._work.is_set()
        self._work.clear()
        return noticed


class SQLPart:
    """A part of ``SQLStore`` (its events, keys, queue, ...): queries run in ``db``."""

    def __init__(self, db: Database) -> None:
        self._db = db
