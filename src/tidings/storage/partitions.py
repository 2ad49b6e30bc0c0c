"""PostgreSQL's partitions of events, deliveries and attempts: made ahead, dropped whole.

Migration 0013 partitions the three tables by range of their keys (``events.seq``,
``deliveries.id``, ``attempts.id``), handed out by sequences in time order: a partition
is a span of time. Two jobs keep them:

* **Ahead.** ``create_next`` adds one range of ``rows`` keys past the last until
  ``AHEAD`` empty ranges wait ahead of each sequence. Should that lag (tidings down, a
  burst), inserts land in the DEFAULT partition instead of failing; the next range
  created takes its rows out of DEFAULT first (ATTACH refuses a range DEFAULT holds rows
  of), with DEFAULT locked from before the move to the commit.
* **Retention.** ``drop_if_done`` drops a closed partition (its sequence is past it, so no
  new row lands there) when its newest row is past the cutoff and it holds no row of an
  event that is kept: an event with a pending delivery. Those are exactly rows the
  batched ``DELETE`` would delete (it deletes an old event with its deliveries and
  attempts unless one of them is pending; paused ones do not keep their events, as the
  README says), in one statement and without dead rows. A partition held back by a
  kept event waits for it: retries end within the retry window (24 h by default, far
  inside any retention period), and the batched ``DELETE`` meanwhile removes the rest of
  its old rows. Moving the blocking rows forward instead would change their keys: an
  event's ``seq`` is its polling cursor, a delivery's id its claim.

Each create and each drop is its own short transaction with a ``lock_timeout``: DDL on a
partition takes a lock on the parent that every emit, claim and record wants, and must
not queue behind a long transaction (everything behind it would queue too). A timeout
gives up until the next round.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

import structlog
from sqlalchemy import ColumnElement, Connection, and_, or_, text
from sqlalchemy.exc import DBAPIError

from tidings.storage.errors import StorageUnavailable
from tidings.storage.schema import PENDING, events
from tidings.storage.sql.database import Database
from tidings.storage.sql.retention import SQLRetention

log = structlog.get_logger("tidings.retention")
T = TypeVar("T")

AHEAD = 2
"""Empty ranges kept ahead of each table's sequence."""
MOST_CREATED = 64
"""At most this many ranges made per round (a sequence far ahead is caught up in rounds)."""
LOCK_TIMEOUT = "500ms"
"""Below PostgreSQL's ``deadlock_timeout`` (1 s): in a lock cycle, retention gives up first."""
NEWEST_OF = 1000
"""A partition's newest rows by key, whose ``created_ms`` stands for its newest row's."""
LOWEST = -(2**63)
SKEW_MS = 3_600_000
"""Leeway between the clocks of processes (an event's time and its seq's order)."""
PARTITIONS_LOCK = 7316018
"""The advisory lock partition changes take (the migrations' is 7316017)."""


@dataclass(frozen=True)
class Partitioned:
    table: str
    key: str


TABLES = (
    Partitioned("events", "seq"),
    Partitioned("deliveries", "id"),
    Partitioned("attempts", "id"),
)
DROP_ORDER = (TABLES[2], TABLES[1], TABLES[0])
"""Attempts and deliveries before their events: a dropped event leaves nothing behind."""


@dataclass(frozen=True)
class Partition:
    name: str
    low: int | None
    """None: from MINVALUE (the table as it was before migration 0013)."""
    high: int


def all_partitioned(conn: Connection) -> bool:
    """Whether migration 0013 has run (it partitions the three tables at once)."""
    return all(is_partitioned(conn, t.table) for t in TABLES)


def is_partitioned(conn: Connection, table: str) -> bool:
    found = conn.execute(
        text(
            "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(:t))"
        ),
        {"t": table},
    )
    return bool(found.scalar())


def ranges(conn: Connection, table: str) -> list[Partition]:
    """The ranged partitions of ``table``, lowest first (DEFAULT left out)."""
    rows = conn.execute(
        text(
            """
            SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits AS i
            JOIN pg_class AS c ON c.oid = i.inhrelid
            WHERE i.inhparent = CAST(:table AS regclass) AND c.relkind IN ('r', 'p')
            """
        ),
        {"table": table},
    ).all()
    found = [_partition(name, bound) for name, bound in rows]
    ranged = [p for p in found if p is not None]
    return sorted(ranged, key=lambda p: LOWEST if p.low is None else p.low)


def _partition(name: str, bound: str | None) -> Partition | None:
    """None for DEFAULT, and for a partition dropped while the catalog was read."""
    match = re.fullmatch(r"FOR VALUES FROM \((.+)\) TO \((.+)\)", bound or "")
    if match is None:
        return None
    low, high = (value.strip("'") for value in match.groups())
    return Partition(name, None if low == "MINVALUE" else int(low), int(high))


def next_key(conn: Connection, table: Partitioned) -> int:
    """The key the table's sequence hands out next."""
    sequence = conn.execute(
        text("SELECT pg_get_serial_sequence(:table, :key)"),
        {"table": table.table, "key": table.key},
    ).scalar_one()
    last, called = conn.execute(text(f"SELECT last_value, is_called FROM {sequence}")).one()
    return int(last) + 1 if called else int(last)


def create_next(conn: Connection, table: Partitioned, rows: int) -> str | None:
    """Add the range after the last one unless ``AHEAD`` empty ranges wait already;
    rows DEFAULT holds of it move in first. Returns the new partition's name."""
    _serialised(conn)
    top, upto = _top_and_next(conn, table)
    if top >= upto + AHEAD * rows:
        return None
    name = f"{table.table}_p{top}"
    t, k = table.table, table.key
    # ATTACH's own lock, taken before the move: a row committed into DEFAULT in between
    # (an emit while maintenance lags) would be one ATTACH finds there and refuses the
    # range for. Nothing weaker: holding EXCLUSIVE, then asking ATTACH's lock, deadlocks
    # with a claim that read DEFAULT and then writes it (it waits for us, we for its read).
    conn.execute(text(f"LOCK TABLE {t}_default IN ACCESS EXCLUSIVE MODE"))
    conn.execute(text(f"CREATE TABLE {name} (LIKE {t} INCLUDING DEFAULTS)"))
    conn.execute(
        text(
            f"""
            WITH moved AS (
                DELETE FROM {t}_default WHERE {k} >= :low AND {k} < :high RETURNING *)
            INSERT INTO {name} SELECT * FROM moved
            """
        ),
        {"low": top, "high": top + rows},
    )
    conn.execute(
        text(f"ALTER TABLE {t} ATTACH PARTITION {name} FOR VALUES FROM ({top}) TO ({top + rows})")
    )
    return name


def headroom(conn: Connection) -> dict[str, int]:
    """Per table, the keys its sequence hands out before rows land in DEFAULT: below one
    range, partition upkeep is failing (below zero, rows are landing there). Empty where
    the tables are not partitioned."""
    if not all_partitioned(conn):
        return {}
    found = {}
    for table in TABLES:
        top, upto = _top_and_next(conn, table)
        found[table.table] = top - upto
    return found


def _top_and_next(conn: Connection, table: Partitioned) -> tuple[int, int]:
    """Where the table's last range ends (its next key, if it has none), and that key."""
    upto = next_key(conn, table)
    existing = ranges(conn, table.table)
    return (existing[-1].high if existing else upto), upto


def closed(conn: Connection, table: Partitioned) -> list[Partition]:
    """The ranges no new row can land in: the table's sequence is past them."""
    upto = next_key(conn, table)
    return [p for p in ranges(conn, table.table) if p.high <= upto]


class Verdict(Enum):
    DROPPED = "dropped"
    HELD = "held"
    """All of it is past the cutoff, but it holds rows of a kept event."""
    YOUNG = "young"
    """Some of it is not past the cutoff yet (or it is gone already)."""


def drop_if_done(conn: Connection, table: Partitioned, part: Partition, before_ms: int) -> Verdict:
    """Drop ``part`` if all of it is past ``before_ms`` and none of it is kept.

    Checked once before the table lock (most partitions fail it: they are too new), then
    again under the parent's lock that the drop takes anyway, so nothing changes in
    between."""
    _serialised(conn)
    if not _exists(conn, part):
        return Verdict.YOUNG
    verdict = _judged(conn, table, part, before_ms)
    if verdict is not Verdict.DROPPED:
        return verdict
    conn.execute(text(f"LOCK TABLE {table.table} IN ACCESS EXCLUSIVE MODE"))
    verdict = _judged(conn, table, part, before_ms)
    if verdict is Verdict.DROPPED:
        conn.execute(text(f"DROP TABLE {part.name}"))
    return verdict


def _judged(conn: Connection, table: Partitioned, part: Partition, before_ms: int) -> Verdict:
    """What ``part`` is, were it dropped now: ``DROPPED`` if it may be."""
    newest = conn.execute(
        text(
            f"SELECT max(created_ms) FROM (SELECT created_ms FROM {part.name} "
            f"ORDER BY {table.key} DESC LIMIT {NEWEST_OF}) AS top"
        )
    ).scalar()
    if newest is not None and newest >= before_ms:
        return Verdict.YOUNG
    kept = _kept_events(conn, before_ms)
    if table.table == "events":
        low = LOWEST if part.low is None else part.low
        held = any(low <= seq < part.high for seq, _ in kept)
    elif not kept:
        held = False
    elif table.table == "deliveries":
        held = _holds(conn, part, "event_seq", [seq for seq, _ in kept])
    else:
        held = _holds(conn, part, "event_id", [event_id for _, event_id in kept])
    return Verdict.HELD if held else Verdict.DROPPED


def _holds(conn: Connection, part: Partition, column: str, values: list[int] | list[str]) -> bool:
    """Whether a row of ``part`` has one of ``values`` in ``column`` (an indexed one)."""
    found = f"SELECT EXISTS (SELECT 1 FROM {part.name} WHERE {column} = ANY(:values))"
    return bool(conn.execute(text(found), {"values": values}).scalar())


def _kept_events(conn: Connection, before_ms: int) -> list[tuple[int, str]]:
    """(seq, id) of the events created before the cutoff (give or take ``SKEW_MS``) that
    have a pending delivery: the only ones a partition past the cutoff can hold rows of.
    Read through the small partial index ``ix_deliveries_pending``, from the seq of the
    first event after the cutoff on: a few rows, however many deliveries are pending."""
    first_young = conn.execute(
        text("SELECT seq FROM events WHERE created_ms >= :at ORDER BY created_ms LIMIT 1"),
        {"at": before_ms + SKEW_MS},
    ).scalar()
    rows = conn.execute(
        text(
            f"""
            SELECT DISTINCT u.event_seq, e.id FROM deliveries AS u
            JOIN events AS e ON e.seq = u.event_seq
            WHERE u.{PENDING} AND u.event_seq < :young
            """
        ),
        {"young": 2**63 - 1 if first_young is None else first_young},
    )
    return [(int(seq), str(event_id)) for seq, event_id in rows]


def _serialised(conn: Connection) -> None:
    """One process changes partitions at a time (every worker runs retention), and none
    waits longer than ``LOCK_TIMEOUT`` for a lock."""
    conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PARTITIONS_LOCK})


def _exists(conn: Connection, part: Partition) -> bool:
    found = conn.execute(text("SELECT to_regclass(:name) IS NOT NULL"), {"name": part.name})
    return bool(found.scalar_one())


def lock_not_available(exc: DBAPIError) -> bool:
    """Whether ``exc`` is a ``lock_timeout`` giving up (SQLSTATE 55P03)."""
    orig = exc.orig
    cause = getattr(orig, "__cause__", None)
    found = getattr(orig, "sqlstate", None) or getattr(cause, "sqlstate", None)
    return bool(found == "55P03")


class PartitionedRetention(SQLRetention):
    """Retention on PostgreSQL: partitions made ahead and dropped whole; row deletes only
    for the old rows of partitions a kept event holds back (and of the first partition,
    the table as it was before migration 0013, until it goes). Rows of a partition not yet
    past the cutoff as a whole wait for it (up to one partition's span of time longer
    than the retention period): deleting them one by one as they age would leave the
    partitions nothing to drop. On a database not partitioned, the deletes alone."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self._held: list[Partition] | None = None
        """Events partitions past the cutoff that a kept event held back in the last
        ``drop_partitions``; None: tables are not partitioned."""

    async def prepare_partitions(self, rows: int) -> int:
        if not await self._db.read(all_partitioned):
            return 0
        made = 0
        failed: list[Exception] = []
        for table in TABLES:
            try:
                made += await self._make_ahead(table, rows)
            except StorageUnavailable:
                raise
            except Exception as exc:  # a lasting obstacle on one table spares the others
                failed.append(exc)
        if made:
            log.info("partitions_created", partitions=made, rows_each=rows)
        if failed:
            raise ExceptionGroup("partitions not made", failed)
        return made

    async def _make_ahead(self, table: Partitioned, rows: int) -> int:
        made = 0
        for _ in range(MOST_CREATED):
            if await self._try(functools.partial(create_next, table=table, rows=rows)) is None:
                return made
            made += 1
        return made

    async def partition_headroom(self) -> dict[str, int]:
        return await self._db.read(headroom)

    async def drop_partitions(self, before_ms: int) -> int:
        if not await self._db.read(all_partitioned):
            self._held = None
            return 0
        dropped, held = 0, []
        for table in DROP_ORDER:
            for part in await self._db.read(functools.partial(closed, table=table)):
                drop = functools.partial(drop_if_done, table=table, part=part, before_ms=before_ms)
                verdict = await self._try(drop)
                dropped += verdict is Verdict.DROPPED
                if table.table == "events" and _deletes_rows(part, verdict):
                    held.append(part)
        self._held = held
        return dropped

    async def prune_events(self, before_ms: int, batch: int) -> int:
        if self._held is None:
            return await super().prune_events(before_ms, batch)
        if not self._held:
            return 0
        within = or_(*(_within(events.c.seq, part) for part in self._held))
        return await self.delete_events(before_ms, batch, within)

    async def _try(self, tx: Callable[[Connection], T]) -> T | None:
        """Run ``tx``; None if a lock it wanted was not free within ``LOCK_TIMEOUT``."""
        try:
            return await self._db.write(tx)
        except DBAPIError as exc:
            if not lock_not_available(exc):
                raise
            log.info("partition_change_postponed", reason="lock_timeout")
            return None


def _deletes_rows(part: Partition, verdict: Verdict | None) -> bool:
    """Whether the old rows of events partition ``part`` are deleted one by one: those of
    a partition a pending delivery holds back, and those of the table as it was before
    migration 0013 (the first partition) as they were before it, until it goes whole."""
    return verdict is Verdict.HELD or (part.low is None and verdict is Verdict.YOUNG)


def _within(key: ColumnElement[int], part: Partition) -> ColumnElement[bool]:
    if part.low is None:
        return key < part.high
    return and_(key >= part.low, key < part.high)
