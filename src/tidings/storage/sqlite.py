"""The SQLite connector: the embedded default, one file, no other process.

SQLite allows one writer at a time, so each process writes through one connection
(``BEGIN IMMEDIATE``): writers queue in Python instead of spinning on SQLITE_BUSY. The
writes that queue while one runs go next as a group, each in a savepoint of one
transaction (group commit): one commit for the whole group. The hot path's writes (an
emit, a claim, a record: ``brief``) run on the event loop when no other process writes
(``_commit_here``); the others, and any that would wait, on one dedicated thread. Reads
run on a small pool of their own; WAL lets them proceed while a write is in progress.
Across processes (``serve`` plus ``worker``) a lock on a file beside the database takes
turns (``storage/write_lock.py``), with the busy timeout behind it for writers that are
not tidings.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sqlite3
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

from tidings.domain.clock import now_ms
from tidings.domain.scheduling import LaneState
from tidings.storage.errors import is_outage, translated
from tidings.storage.records import AttemptOutcome, ClaimedDelivery, ClaimRequest, StoredEvent
from tidings.storage.rows import EVENT_COLUMNS, event_values
from tidings.storage.rules import LaneWakes, lets_next_go, streak_changes
from tidings.storage.schema import CLAIMABLE
from tidings.storage.sql import Database, SQLStore
from tidings.storage.sql import queue as q
from tidings.storage.sql.events import SQLEvents, fan_out_params
from tidings.storage.sql.queue import (
    SQLQueue,
    attempt_row,
    claimed_deliveries,
    delivery_update,
)
from tidings.storage.wakes import ProcessWakes
from tidings.storage.write_lock import SUFFIX as WRITE_LOCK_SUFFIX
from tidings.storage.write_lock import WriteLock

T = TypeVar("T")

BUSY_TIMEOUT_MS = 30_000
BEGUN = "tidings_begun"
"""In a connection's ``info``: ``BEGIN IMMEDIATE`` is done already (``_begun_at_once``)."""
HERE_AT_MOST = 64
"""Writes in a group that may run on the event loop: a longer queue (behind a slow write
on the thread, say) is written on the thread, where it does not stall the loop."""
PROBE_INTERVAL = 0.05
CHECKPOINT_INTERVAL = 1.0
READERS = 4


class _Queued(NamedTuple):
    """A write waiting for the writer."""

    tx: Callable[[Connection], Any]
    done: asyncio.Future[Any]
    """Its caller's: the result or the error, once committed or not."""
    alone: bool
    """In a transaction of its own (an app's work, which may commit or roll back itself)."""
    brief: bool
    """Quick enough to run on the event loop (see ``_commit_here``)."""


def _next_group(queued: list[_Queued]) -> list[_Queued]:
    """The writes to commit together next: the first alone if it runs alone, else those
    before the first that does."""
    if queued[0].alone:
        return queued[:1]
    end = next((n for n, q in enumerate(queued) if q.alone), len(queued))
    return queued[:end]


_Settled = tuple[bool, Any]
"""A write done: (True, its result) or (False, the exception it raised)."""


def _engine(url: Any, *, immediate: bool, pool_size: int, checkpoints: bool = True) -> Engine:
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=60,
        connect_args={"check_same_thread": False},  # the writer's: its thread or the loop
    )

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
        if not connection.info.pop(BEGUN, False):  # else begun by ``_begun_at_once``
            connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _due_now(conn: Connection) -> bool:
    return _driver(conn).execute(q.DUE_SOMEWHERE, {"now": now_ms()}).fetchone() is not None


def _begun_at_once(conn: Connection) -> bool:
    """``BEGIN IMMEDIATE`` if the file is free now, not after the busy timeout: on the
    event loop, a writer that is not tidings (the ``sqlite3`` shell) must not stall it.
    False on any error, and the connection is given up (its busy timeout may be left
    at 0): the write thread tries again on a new one, and meets it as it always has."""
    try:
        _begin_immediate(conn, 0)
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_BUSY:
            conn.invalidate()
        return False
    return True


def _begin_immediate(conn: Connection, busy_timeout_ms: int) -> None:
    """``BEGIN IMMEDIATE``, waiting at most ``busy_timeout_ms`` for a writer that is not
    tidings; then the connection's own busy timeout again. The transaction that follows
    is this one (``on_begin`` begins no other)."""
    driver = _driver(conn)
    driver.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
    try:
        driver.execute("BEGIN IMMEDIATE")
    finally:
        driver.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.info[BEGUN] = True


def _driver(conn: Connection) -> sqlite3.Connection:
    driver: sqlite3.Connection = conn.connection.driver_connection  # type: ignore[assignment]
    return driver


_INSERT_EVENT = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES ({', '.join('?' * 8)}) RETURNING seq"


class SQLiteDatabase(Database):
    MATCHES = """EXISTS (
        SELECT 1 FROM json_each(s.event_types) AS p
        WHERE p.value = '*' OR p.value = :type
           OR (substr(p.value, -2) = '.*'
               AND substr(:type, 1, length(p.value) - 1)
                   = substr(p.value, 1, length(p.value) - 1)))"""
    MATCHED_IDS = "SELECT value FROM json_each(:matched)"

    def __init__(
        self,
        writer: Engine,
        reader: Engine,
        wakes: ProcessWakes | None = None,
        write_lock: WriteLock | None = None,
    ) -> None:
        super().__init__()
        self.writer = writer
        self.reader = reader
        self._wakes = wakes or ProcessWakes(None)
        self._write_lock = write_lock or WriteLock(None)
        self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="tidings-sqlite-write")
        self._read_threads = ThreadPoolExecutor(READERS, thread_name_prefix="tidings-sqlite-read")
        self._checkpointer: asyncio.Task[None] | None = None
        self._queued: list[_Queued] = []
        self._committing: asyncio.Future[list[_Settled]] | None = None
        self._closed = False
        self._writer_connections = 0
        """The writer's open ``sqlite3`` connections: the event loop uses one, never opens it."""
        event.listen(writer, "connect", lambda *_: self._count_writer_connections(1))
        event.listen(writer, "close", lambda *_: self._count_writer_connections(-1))

    def _count_writer_connections(self, change: int) -> None:
        self._writer_connections += change

    @classmethod
    def from_url(cls, url: str) -> SQLiteDatabase:
        parsed = make_url(url).set(drivername="sqlite+pysqlite")
        folder = lock = None
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            folder = Path(parsed.database + ".wake")
            lock = Path(parsed.database + WRITE_LOCK_SUFFIX)
        return cls(
            _engine(parsed, immediate=True, pool_size=1, checkpoints=False),
            _engine(parsed, immediate=False, pool_size=READERS),
            ProcessWakes(folder),
            WriteLock(lock),
        )

    @translated
    async def write(
        self, tx: Callable[[Connection], T], *, alone: bool = False, brief: bool = False
    ) -> T:
        """Run ``tx`` in a write transaction: with the writes that queued while the last
        one ran (group commit, see ``_commit_group``), or ``alone`` in one of its own."""
        loop = asyncio.get_running_loop()
        if self._checkpointer is None:
            self._checkpointer = loop.create_task(self._checkpoint_loop())
        done: asyncio.Future[Any] = loop.create_future()
        self._queued.append(_Queued(tx, done, alone, brief and not alone))
        if self._committing is None:
            self._commit_next(loop)
        result: T = await done
        return result

    def _commit_next(self, loop: asyncio.AbstractEventLoop) -> None:
        self._queued = [queued for queued in self._queued if not queued.done.done()]
        if not self._queued:
            return  # every caller was cancelled before its write began: none runs
        if self._closed:
            self._refuse_queued(RuntimeError("closed"))
            return
        group = _next_group(self._queued)
        del self._queued[: len(group)]
        try:
            done_here = self._commit_here(group)
        except BaseException as exc:  # KeyboardInterrupt, say: its callers hear of it
            _settle(group, [(False, exc)] * len(group))
            raise
        committing: asyncio.Future[list[_Settled]]
        if done_here is not None:
            committing = loop.create_future()
            committing.set_result(done_here)  # settled on the loop's next turn
        else:
            try:
                committing = loop.run_in_executor(self._write_thread, self._commit_group, group)
            except RuntimeError as exc:  # closed: the writer thread takes nothing more
                _settle(group, [(False, exc)] * len(group))
                self._refuse_queued(exc)
                return
        self._committing = committing

        def settled(_: asyncio.Future[list[_Settled]]) -> None:
            self._committing = None
            failure: BaseException | None = (
                RuntimeError("cancelled") if committing.cancelled() else committing.exception()
            )
            if failure is not None:
                _settle(group, [(False, failure)] * len(group))
            else:
                _settle(group, committing.result())
            if self._queued:
                self._commit_next(loop)

        committing.add_done_callback(settled)

    def _refuse_queued(self, exc: Exception) -> None:
        """Every write still queued fails with ``exc``: none is left waiting for a writer
        that takes no more."""
        queued, self._queued = self._queued, []
        _settle(queued, [(False, exc)] * len(queued))

    def _commit_here(self, group: list[_Queued]) -> list[_Settled] | None:
        """Commit a group of brief writes on the event loop, if no other process writes
        now; None if it must wait for one, on the write thread.

        A write on the write thread lets go of the GIL at each statement and waits to
        get it back from the event loop: a group of 27 emits held the file's lock for
        155 ms of which it used 6.5 ms of CPU, at 1,000 emits a second in ``serve``, and
        every other process's writes waited behind it. On the loop it runs straight
        through, and the loop waits only for its CPU."""
        if len(group) > HERE_AT_MOST or not all(queued.brief for queued in group):
            return None
        if not self._writer_connections:
            return None  # opening one waits on the file (busy timeout): the thread does
        if not self._write_lock.try_hold():
            return None
        try:
            return self._transactions_at_once(group)
        finally:
            self._write_lock.let_go()

    def _transactions_at_once(self, group: list[_Queued]) -> list[_Settled] | None:
        try:
            conn = self.writer.connect()
        except Exception:  # the write thread meets it too, and handles it as ever
            return None
        outcomes = None
        try:
            if _begun_at_once(conn):  # else a writer that is not tidings has the file
                outcomes = self._transactions(conn, group)
        finally:
            with contextlib.suppress(Exception):  # what was written is written
                conn.close()
        return outcomes

    def _commit_group(self, group: list[_Queued]) -> list[_Settled]:
        """On the write thread, once the file is this process's: ``_transactions``.

        The wait for the write lock counts against the busy timeout. Behind a writer that
        is not tidings (the ``sqlite3`` shell holding the file) the process holding the
        lock sits out its busy timeout; the others, waiting for the lock meanwhile, then
        give up at once instead of each sitting out one more in turn: every process
        answers 503 after one busy timeout, not the k-th after k of them."""
        asked = time.monotonic()
        with self._write_lock.held(), self.writer.connect() as conn:
            waited_ms = int((time.monotonic() - asked) * 1000)
            left_ms = max(0, BUSY_TIMEOUT_MS - waited_ms) if waited_ms else None
            return self._transactions(conn, group, busy_timeout_ms=left_ms)

    def _transactions(
        self, conn: Connection, group: list[_Queued], *, busy_timeout_ms: int | None = None
    ) -> list[_Settled]:
        """The group's transactions, each in a savepoint of one transaction, and one
        commit (begun waiting at most ``busy_timeout_ms`` for another writer, if given;
        else the connection's own busy timeout). A transaction that raises rolls back to its
        savepoint alone (its caller gets the error); a failed commit fails them all, and
        none of their callers was told otherwise. Under load the commit, the ``BEGIN
        IMMEDIATE`` and any hops between threads are paid once per group, not once per
        write: a third of an emit's CPU.

        Whatever a write that failed read inside its transaction may have been cached
        (a tenant's filters, as of a version that never committed): the filter books are
        forgotten then, and read again as committed."""
        outcomes: list[_Settled] = []
        try:
            if busy_timeout_ms is not None:
                _begin_immediate(conn, busy_timeout_ms)
            with conn.begin():
                if len(group) == 1:
                    return [(True, group[0].tx(conn))]
                driver = _driver(conn)  # SAVEPOINT through SQLAlchemy costs 5x more
                for queued in group:
                    driver.execute("SAVEPOINT tidings_write")
                    try:
                        outcomes.append((True, queued.tx(conn)))
                    except Exception as exc:
                        if is_outage(exc):
                            raise  # the connection is suspect: the whole group fails
                        traceback.clear_frames(exc.__traceback__)  # its open cursors
                        driver.execute("ROLLBACK TO tidings_write")
                        self.filters.clear()
                        outcomes.append((False, exc))
                    driver.execute("RELEASE tidings_write")
        except Exception as exc:
            self.filters.clear()
            if is_outage(exc):  # e.g. a full disk: start afresh once it is back
                conn.invalidate()
            return [(False, exc)] * len(group)
        return outcomes

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

    @translated
    async def read(self, tx: Callable[[Connection], T]) -> T:
        def run() -> T:
            with self.reader.connect() as conn:
                return tx(conn)

        return await asyncio.get_running_loop().run_in_executor(self._read_threads, run)

    def notify_work(self) -> None:
        super().notify_work()
        self._wakes.send()

    async def wait_for_work(self, seconds: float) -> None:
        """SQLite has no NOTIFY: besides the wakes of this process and of the others on
        the file (``storage/wakes.py``), look every ``PROBE_INTERVAL`` for rows another
        process made due, with a read that takes no write lock."""
        self._wakes.listen(super().notify_work)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            await super().wait_for_work(min(PROBE_INTERVAL, left))
            if self.woken or await self.read(_due_now):
                return

    async def close(self) -> None:
        self._closed = True
        self._wakes.close()
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpointer
        self._write_thread.shutdown(wait=True)
        self._read_threads.shutdown(wait=True)
        self._write_lock.close()
        self.writer.dispose()
        self.reader.dispose()


def _settle(group: list[_Queued], outcomes: list[_Settled]) -> None:
    for queued, (ok, value) in zip(group, outcomes, strict=True):
        done = queued.done
        if done.done():
            continue  # its caller was cancelled; the write ran all the same
        if ok:
            done.set_result(value)
        else:
            done.set_exception(value)


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
            row = db.execute(_INSERT_EVENT, event_values(event)).fetchone()
            seq = int(row[0])
            book = self._db.filters.current(
                lambda sql, p: db.execute(sql, p).fetchall(), event.tenant_id
            )
            matched = book.matching(event.type, event.body)
            params = fan_out_params(dataclasses.replace(event, seq=seq), matched)
            for sql in self._db.fan_out(matched):
                db.execute(sql, params)
            return seq

        seq = await self._db.write(tx, brief=True)
        self._db.notify_work()
        return dataclasses.replace(event, seq=seq), True


class SQLiteQueue(SQLQueue):
    """The queue's transactions as plain functions of a ``sqlite3`` connection."""

    async def claim(self, request: ClaimRequest) -> list[ClaimedDelivery]:
        """A look first, with a read: a claim that finds nothing (one of the workers a
        wake woke, or a look of the probe) takes no write lock, which would stall the
        writes of every other process on the file (SQLite's busy wait sleeps)."""
        if not await self._db.read(lambda conn: _any_due(_driver(conn), request)):
            return []
        token = uuid.uuid4().hex
        rows = await self._db.write(lambda conn: _claim(_driver(conn), request, token), brief=True)
        return claimed_deliveries(rows, token)

    async def record(self, outcomes: Sequence[AttemptOutcome]) -> dict[str, int]:
        if not outcomes:
            return {}
        return await self._db.write(lambda conn: _record(_driver(conn), outcomes), brief=True)

    async def repair(self, now_ms: int) -> int:
        return await self._db.write(lambda conn: _repair(_driver(conn), now_ms))


def _due_lanes(request: ClaimRequest, lanes: int) -> dict[str, Any]:
    """``_DUE_LANES``' arguments: the first ``lanes`` due lanes the request may take."""
    return {"now": request.now_ms, "skip": json.dumps(list(request.skip)), "lanes": lanes}


def _any_due(db: sqlite3.Connection, request: ClaimRequest) -> bool:
    return db.execute(_DUE_LANES, _due_lanes(request, 1)).fetchone() is not None


def _claim(db: sqlite3.Connection, request: ClaimRequest, token: str) -> list[sqlite3.Row]:
    now = request.now_ms
    cursor = db.cursor()
    cursor.row_factory = sqlite3.Row
    found = cursor.execute(_DUE_LANES, _due_lanes(request, request.lanes)).fetchall()
    states = [_lane_state(db, row, now) for row in found]
    plan = request.plan([state.lane(now) for state in states])
    lease_until = now + request.lease_ms
    claimed: list[int] = []
    for state in states:
        wanted = plan.get(state.subscription_id, 0)
        took = []
        if wanted > 0:
            took = [
                r[0]
                for r in db.execute(
                    q.TAKE,
                    {
                        "sub": state.subscription_id,
                        "now": now,
                        "n": wanted,
                        "lease_until": lease_until,
                        "token": token,
                    },
                ).fetchall()
            ]
            claimed.extend(took)
        next_pending = db.execute(q.NEXT_DUE, {"sub": state.subscription_id}).fetchone()[0]
        update = state.after_claim(len(took), now, next_pending)
        db.execute(q.UPDATE_LANE, q.lane_update_params(update, now))
    if not claimed:
        return []
    marks = ",".join("?" * len(claimed))
    return cursor.execute(
        q.DETAILS.format(deliveries="deliveries", ids=f"d.id IN ({marks})"), claimed
    ).fetchall()


_DUE_LANES = q.DUE_LANES.format(
    skip="l.subscription_id NOT IN (SELECT value FROM json_each(:skip))", lock=""
)


def _lane_state(db: sqlite3.Connection, row: sqlite3.Row, now: int) -> LaneState:
    leased, lease_ends = 0, None
    if row["max_concurrency"] is not None:
        leased, lease_ends = db.execute(
            q.LEASED_NOW, {"sub": row["subscription_id"], "now": now}
        ).fetchone()
    return q.lane_state(row, leased, lease_ends)


def _record(db: sqlite3.Connection, outcomes: Sequence[AttemptOutcome]) -> dict[str, int]:
    subs = sorted({o.claimed.subscription_id for o in outcomes})
    marks = ",".join("?" * len(subs))
    enabled = dict(db.execute(q.ENABLED.format(ids=f"id IN ({marks})"), subs).fetchall())
    db.executemany(q.INSERT_ATTEMPT, [attempt_row(o) for o in outcomes])
    updates = [delivery_update(o, enabled.get(o.claimed.subscription_id)) for o in outcomes]
    applied = _still_claimed(db, updates)
    db.executemany(q.RECORD, [u for u, holds in zip(updates, applied, strict=True) if holds])
    wakes = LaneWakes()
    for o, params, holds in zip(outcomes, updates, applied, strict=True):
        if holds:
            wakes.recorded(o, params["b_status"])
            if lets_next_go(o, params["b_status"]):
                unblocked = db.execute(q.UNBLOCK_NEXT, q.key_params(o.claimed)).fetchone()
                if unblocked is not None:
                    wakes.wake(o.claimed.subscription_id, o.finished_ms)
    streaks: dict[str, int] = {}
    for sub_id, failures in streak_changes(outcomes):
        if failures is None:
            db.execute(q.RESET_STREAK, {"sub": sub_id})
        else:
            row = db.execute(q.ADD_FAILURES, {"sub": sub_id, "n": failures}).fetchone()
            streaks[sub_id] = int(row[0])
    db.executemany(q.WAKE_LANE, wakes.params())
    return streaks


def _still_claimed(db: sqlite3.Connection, updates: list[dict[str, Any]]) -> list[bool]:
    """Whether each update's claim still holds: its token is still its row's. One that
    does not was claimed again after its lease ran out; only its attempt is recorded.
    Read once for the batch (this transaction holds the write lock: nothing changes
    before the updates), so the updates go in one ``executemany``."""
    ids = [u["b_id"] for u in updates]
    marks = ",".join("?" * len(ids))
    tokens = dict(db.execute(q.CLAIM_TOKENS.format(ids=f"id IN ({marks})"), ids).fetchall())
    return [tokens.get(u["b_id"]) == u["b_token"] for u in updates]


def _repair(db: sqlite3.Connection, now_ms: int) -> int:
    heads = db.execute(q.STRANDED_HEADS).fetchall()
    for delivery_id, sub_id in heads:
        db.execute(q.LET_GO, {"id": delivery_id})
        db.execute(q.WAKE_LANE, {"sub": sub_id, "due": now_ms})
    asleep = db.execute(_ASLEEP_WITH_WORK, {"now": now_ms}).fetchall()
    db.executemany(q.WAKE_LANE, [{"sub": sub, "due": due} for sub, due in asleep])
    return len(heads) + len(asleep)


_ASLEEP_WITH_WORK = f"""
    SELECT sub, max(due, :now) FROM (
        SELECT l.subscription_id AS sub, l.next_due_ms AS next_due,
               (SELECT min(d.due_ms) FROM deliveries AS d
                WHERE d.subscription_id = l.subscription_id AND {CLAIMABLE}) AS due
        FROM lanes AS l)
    WHERE due IS NOT NULL AND (next_due IS NULL OR next_due > max(due, :now))
"""
"""Lanes asleep past their earliest claimable delivery (see PostgreSQL's
``_WAKE_SLEEPING_LANES_WITH_WORK``; here a wake shares the emit's transaction, so only a
bug or a hand-edited database leaves one)."""


def open_sqlite(url: str) -> SQLStore:
    db = SQLiteDatabase.from_url(url)
    return SQLStore.build(db, SQLiteEvents(db), SQLiteQueue(db))
