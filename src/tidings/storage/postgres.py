"""The PostgreSQL connector: many API processes and workers share one database.

* Claims lock the lanes they take from and the rows they take with ``FOR UPDATE SKIP
  LOCKED``, so concurrent workers never take the same row and never wait for each other.
* New work is announced with ``NOTIFY`` inside the inserting transaction (delivered on
  commit); each process LISTENs on one dedicated connection and wakes its dispatcher.
  The dispatcher's short poll remains the fallback if a notification is missed.
* Emits of one tenant serialise on a transaction-level advisory lock, so events commit
  in ``seq`` order and a cursor past ``seq`` N can never later miss an event below N.
  Everything that queues behind or lets go a FIFO delivery takes the same lock, so a
  delivery is never queued behind one that has just finished.
* The hot path (emit, claim, record) runs on asyncpg directly, with the shared SQL of
  ``sql/queue.py`` (lists as arrays, several rows per statement): profiling showed
  SQLAlchemy's async adaptation costing more CPU per event than the database work
  itself. Everything else goes through the shared SQLAlchemy stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

import asyncpg
import structlog
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tidings.domain.clock import now_ms
from tidings.domain.filters import FilterBook
from tidings.domain.scheduling import LaneState
from tidings.storage.errors import Outage, is_outage, translated
from tidings.storage.partitions import PartitionedRetention
from tidings.storage.records import AttemptOutcome, ClaimedDelivery, ClaimRequest, StoredEvent
from tidings.storage.rows import event_values
from tidings.storage.rules import LaneWakes, lets_next_go, recorded_status, streak_changes
from tidings.storage.schema import CLAIMABLE, LEASED
from tidings.storage.servers import Servers
from tidings.storage.sql import Database, SQLStore
from tidings.storage.sql import queue as q
from tidings.storage.sql.database import QUEUE_ROWS
from tidings.storage.sql.events import SQLEvents
from tidings.storage.sql.filtering import FilterBooks
from tidings.storage.sql.queue import (
    SQLQueue,
    attempt_row,
    claimed_deliveries,
    delivery_update,
)

CHANNEL = "tidings_work"
log = structlog.get_logger("tidings.storage")
STREAM_LOCK = "tidings.events:"
WAKE_RETRY_FIRST = 1.0
WAKE_RETRY_MAX = 30.0

T = TypeVar("T")


HOT_SETTINGS = {
    "plan_cache_mode": "force_generic_plan",
    "default_transaction_isolation": "read committed",
}
"""Read committed whatever the database's default: ``tidings_claim_v1`` relies on each of
its statements taking a fresh snapshot (migration 0014). The hot path's prepared
statements keep one generic plan. With the history tables
partitioned (migration 0013), PostgreSQL's default kept planning them afresh for every
execution, across every partition and index: a fifth more server CPU per delivery
(``bench/db_cost.py``: 1,022-1,080 µs against 875 µs with this, and 872 µs before the
partitions). A generic plan still prunes partitions by key at run time, and the hot
queries spell their partial indexes' predicates as literals (``schema.CLAIMABLE``), which a
generic plan can still match."""


class PostgresDatabase(Database):
    MATCHES = """EXISTS (
        SELECT 1 FROM json_array_elements_text(s.event_types::json) AS p(v)
        WHERE p.v = '*' OR p.v = :type
           OR (right(p.v, 2) = '.*' AND starts_with(:type, left(p.v, -1))))"""
    MATCHED_IDS = "SELECT json_array_elements_text(CAST(:matched AS json))"

    def __init__(self, engine: AsyncEngine, servers: Servers) -> None:
        super().__init__()
        self.engine = engine
        self._servers = servers
        self._listener: asyncpg.Connection | None = None
        self._pool: asyncpg.Pool | None = None
        self._listen_lock = asyncio.Lock()
        self._pool_lock = asyncio.Lock()
        self._listening = Outage("listen")
        self._background: dict[str, asyncio.Task[None]] = {}

    @classmethod
    def from_url(cls, url: str) -> PostgresDatabase:
        servers = Servers.from_url(url)
        engine = create_async_engine(
            "postgresql+asyncpg://",
            async_creator=servers.connect,
            pool_size=10,
            max_overflow=10,
            pool_pre_ping=True,  # after a restart or failover, stale connections are replaced
        )
        return cls(engine, servers)

    def queue_again(self, which: str) -> tuple[str, ...]:
        """One statement: queue the rows, wake their lanes, and NOTIFY other processes.

        The lanes are locked in id order (as records lock them) and written even if
        already due: see ``WAKE_LANE`` for why the lock matters."""
        return (
            f"""
            WITH queued AS (
                {QUEUE_ROWS.format(which=which)}
                RETURNING subscription_id, status, blocked),
            locked AS (
                SELECT subscription_id FROM lanes
                WHERE subscription_id IN (SELECT subscription_id FROM queued WHERE {CLAIMABLE})
                ORDER BY subscription_id FOR UPDATE),
            woken AS (
                UPDATE lanes SET next_due_ms = least(coalesce(lanes.next_due_ms, :now), :now)
                FROM locked WHERE lanes.subscription_id = locked.subscription_id
                RETURNING 1)
            SELECT pg_notify('{CHANNEL}', '') FROM queued WHERE {CLAIMABLE} LIMIT 1
            """,
        )

    @translated
    async def write(
        self, tx: Callable[[Connection], T], *, alone: bool = False, brief: bool = False
    ) -> T:
        async with self.engine.begin() as conn:
            return await conn.run_sync(tx)

    @translated
    async def read(self, tx: Callable[[Connection], T]) -> T:
        async with self.engine.connect() as conn:
            return await conn.run_sync(tx)

    def lock_event_stream(self, conn: Connection, tenant_id: str) -> None:
        conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": STREAM_LOCK + tenant_id},
        )

    def announce_work(self, conn: Connection) -> None:
        conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})

    async def wait_for_work(self, seconds: float) -> None:
        await self._ensure_listening()
        await super().wait_for_work(seconds)

    async def _ensure_listening(self) -> None:
        """(Re)open the LISTEN connection: after an outage it comes back by itself on the
        next wait; meanwhile the dispatcher's poll finds the work."""
        async with self._listen_lock:
            if self._listener is not None and not self._listener.is_closed():
                return
            if self._listener is not None:
                self._listener.terminate()
                self._listener = None
            try:
                listener = await self._servers.connect()
                try:
                    await listener.add_listener(CHANNEL, self._on_notify)
                except BaseException:
                    listener.terminate()
                    raise
                self._listener = listener
            except Exception as exc:
                if not is_outage(exc):
                    raise
                self._listening.noted(exc)
                return
            self._listening.succeeded()
            self.notify_work()  # what was announced while nobody listened

    def _on_notify(self, *_: object) -> None:
        self.notify_work()

    async def hot_pool(self) -> asyncpg.Pool:
        """asyncpg's own pool, for the hot path."""
        if self._pool is not None:
            return self._pool
        async with self._pool_lock:  # two first callers at once must not make two pools
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    connect=functools.partial(self._servers.connect, server_settings=HOT_SETTINGS),
                    min_size=1,
                    max_size=10,
                    reset=_keep_session,
                )
            return self._pool

    @contextlib.asynccontextmanager
    async def hot_connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection of the hot pool. One that an error went through is closed, not
        reused: the pool's reset on release does nothing (``_keep_session``), so nothing
        else would notice a connection an outage left mid-protocol (seen in a failover
        test: "cannot switch to state 12; another operation (2) is in progress", a 500 on
        the next emit that drew it)."""
        pool = await self.hot_pool()
        async with pool.acquire() as conn:
            try:
                yield conn
            except BaseException:
                conn.terminate()
                raise

    def run_in_background(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Start ``work`` unless it runs already; ``close`` cancels it."""
        running = self._background.get(work.__name__)
        if running is None or running.done():
            self._background[work.__name__] = asyncio.get_running_loop().create_task(work())

    async def close(self) -> None:
        while self._background:  # one cancelled may start another (a wake noted for retry)
            _, task = self._background.popitem()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        async with self._pool_lock:
            if self._pool is not None:
                await self._pool.close()
                self._pool = None
        async with self._listen_lock:
            if self._listener is not None:
                with contextlib.suppress(Exception):
                    await self._listener.close()
                self._listener = None
        await self.engine.dispose()


async def _keep_session(_: asyncpg.Connection) -> None:
    """The hot pool's reset on release: nothing. asyncpg's default sends ``CLOSE ALL;
    RESET ALL; SELECT pg_advisory_unlock_all(); UNLISTEN *`` every time a connection goes
    back (a round trip and four statements per emit, claim and record; ``bench/db_cost.py``
    counts them), for session state the hot path never sets: it takes transaction locks
    only, opens no cursor, changes no setting, listens on a connection of its own. An open
    transaction is still rolled back (asyncpg does that before calling this)."""


class Statement:
    """Shared ``:name`` SQL, numbered for asyncpg once."""

    def __init__(self, sql: str) -> None:
        self.sql, self.names = _numbered(sql)

    def args(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(values[name] for name in self.names)


def _numbered(sql: str) -> tuple[str, list[str]]:
    """``:name`` parameters to asyncpg's ``$n``; returns the SQL and the names in order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return re.sub(r"(?<!:):([a-z_]+)", number, sql), names


class PostgresEvents(SQLEvents):
    def __init__(self, db: PostgresDatabase) -> None:
        super().__init__(db)
        self._pg = db
        self._unwoken: set[str] = set()
        """Lanes whose wake failed: retried in the background, and with the next emit."""
        self._to_wake: set[str] = set()
        self._wake_waiters: list[asyncio.Future[None]] = []
        self._to_emit: list[tuple[tuple[Any, ...], asyncio.Future[_Emitted]]] = []

    @translated
    async def insert_event(
        self, event: StoredEvent, idempotency_key: str | None
    ) -> tuple[StoredEvent, bool]:
        """The event and its deliveries commit in one call of ``tidings_emit_v3`` (see
        migration 0012: the tenant's stream lock is held for the server's work alone), in
        one statement with the emits asked for while the last one ran
        (``_emit_with_others``: at 1,000 emits a second about four a statement); the
        lanes are woken (and NOTIFY sent) just after, in a second transaction, which the
        emits that commit meanwhile share (``_wake_with_others``). Waking inside the
        emit's transaction was tried: the stream lock, held longer, made p99 at 500 emits
        a second 26 -> 697 ms.

        Filters run here, before the call and outside the lock, with the tenant's
        ``FilterBook`` as this process last read it; the call passes its version and the
        filtered subscriptions that matched, and stores nothing if the tenant's filters
        changed since (it returns no seq): the book is read again and the call repeated.
        A tenant this process has not seen yet costs one read first.

        Waking takes each lane's row lock, which a claim or a record may hold for a few
        milliseconds; under the stream lock every emit of the tenant would queue behind
        it. After the commit the wake still orders itself against any claim that parks a
        lane from a snapshot without these rows (see ``WAKE_LANE``). A failed wake is
        logged, not raised (the event is stored: a 503 would make the client emit it
        twice), and retried in the background and with the next emit; a crash between the
        two can leave a lane asleep with work until its next wake or the next ``repair``
        (run by workers when the database is back after an outage, and with retention):
        late, never lost."""
        if idempotency_key is not None:  # the rarer path keeps its race handling
            return await super().insert_event(event, idempotency_key)
        now = now_ms()
        books = self._pg.filters
        book = books.get(event.tenant_id)
        for _ in range(EMIT_TRIES):
            if book is None:
                async with self._pg.hot_connection() as conn:
                    book = await _read_book(books, conn, event.tenant_id)
            matched = await _matching(book, event)
            seq, lanes = await self._emit_with_others(
                (*event_values(event), now, book.version, matched)
            )
            if seq is not None:
                break
            book = None  # the tenant's filters changed since it was read
        else:  # they kept changing: decide under the lock instead (and keep that book)
            return await super().insert_event(event, None)
        if lanes or self._unwoken:
            await self._wake_with_others(lanes)
        self._db.notify_work()
        return dataclasses.replace(event, seq=seq), True

    async def _emit_with_others(self, args: tuple[Any, ...]) -> _Emitted:
        """``_EMIT`` with ``args``, in one statement with the emits asked for meanwhile:
        emits go in rounds, one at a time (group commit), each round one statement, one
        transaction and one commit for all its events (``_EMIT_MANY``)."""
        done: asyncio.Future[_Emitted] = asyncio.get_running_loop().create_future()
        self._to_emit.append((args, done))
        self._pg.run_in_background(self._emit_rounds)
        return await done

    async def _emit_rounds(self) -> None:
        while self._to_emit:
            batch, self._to_emit = self._to_emit, []
            try:
                outcomes = await self._emit_batch([args for args, _ in batch])
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            except BaseException:  # cancelled (closing): so are the emits waiting
                for _, done in [*batch, *self._to_emit]:
                    done.cancel()
                self._to_emit = []
                raise
            for (_, done), outcome in zip(batch, outcomes, strict=True):
                if done.done():
                    continue  # its caller was cancelled meanwhile
                if isinstance(outcome, Exception):
                    done.set_exception(outcome)
                else:
                    done.set_result(outcome)

    async def _emit_batch(self, batch: list[tuple[Any, ...]]) -> list[_Emitted | Exception]:
        """One statement for the batch, its tenants' stream locks taken in tenant order
        (as every batch takes them: no two wait for each other). Should it fail, each
        event goes again alone, so one that cannot be stored fails alone."""
        async with self._pg.hot_connection() as conn:
            if len(batch) > 1:
                order = sorted(range(len(batch)), key=lambda i: batch[i][1])
                ordered = [batch[i] for i in order]
                try:
                    rows = await conn.fetch(_EMIT_MANY, *_emit_columns(ordered))
                except Exception as exc:
                    if is_outage(exc):
                        raise
                else:
                    outcomes: list[_Emitted | Exception] = [(None, [])] * len(batch)
                    for i, row in zip(order, rows, strict=True):
                        outcomes[i] = (row["o_seq"], row["o_lanes"])
                    return outcomes
            results: list[_Emitted | Exception] = []
            for args in batch:
                try:
                    row = await conn.fetchrow(_EMIT, *args)
                except Exception as exc:
                    if len(batch) == 1:
                        raise
                    if is_outage(exc):  # the ones stored must say so: the rest fail
                        with contextlib.suppress(Exception):  # asyncpg may have let it go
                            conn.terminate()
                        return results + [exc] * (len(batch) - len(results))
                    results.append(exc)
                else:
                    results.append((row["o_seq"], row["o_lanes"]))
            return results

    async def _wake_with_others(self, lanes: Sequence[str]) -> None:
        """Wake ``lanes`` with those of the emits that commit while a wake is under way:
        wakes go in rounds, one at a time, each one statement (and one NOTIFY) for every
        lane asked for since the last began. An emit answers once the round that took
        its lanes is over, as it did when each emit woke its own."""
        done = asyncio.get_running_loop().create_future()
        self._to_wake.update(lanes)
        self._wake_waiters.append(done)
        self._pg.run_in_background(self._wake_rounds)
        await done

    async def _wake_rounds(self) -> None:
        while self._wake_waiters:
            lanes, self._to_wake = self._to_wake | self._unwoken, set()
            waiters, self._wake_waiters = self._wake_waiters, []
            try:
                with contextlib.suppress(Exception):  # _wake noted and logged it
                    await self._wake(sorted(lanes))
            except BaseException:  # cancelled (closing): the next round's lanes are noted
                self._unwoken.update(self._to_wake)
                waiters, self._wake_waiters = waiters + self._wake_waiters, []
                raise
            finally:
                for waiter in waiters:
                    if not waiter.done():  # else its emit was cancelled meanwhile
                        waiter.set_result(None)

    async def _wake(self, lanes: list[str]) -> None:
        try:
            if lanes:
                async with self._pg.hot_connection() as conn:
                    await conn.execute(_WAKE_AND_NOTIFY, lanes, now_ms())
        except BaseException as exc:
            self._unwoken.update(lanes)
            self._pg.run_in_background(self._retry_wakes)
            if not isinstance(exc, Exception):
                raise  # cancelled: the lanes are noted, the cancellation goes on
            # stored already: the answer must say so, not fail
            log.warning("lane_wake_failed", error=str(exc)[:200], lanes=len(lanes))
        else:
            self._unwoken.difference_update(lanes)

    async def _retry_wakes(self) -> None:
        """Wake the lanes whose wake failed, on a backoff, until it succeeds: the next emit
        of this process may be far off (a quiet tenant, or another API replica's turn)."""
        pause = WAKE_RETRY_FIRST
        while self._unwoken:
            await asyncio.sleep(pause)
            pause = min(WAKE_RETRY_MAX, pause * 2)
            with contextlib.suppress(Exception):  # _wake noted and logged it
                await self._wake(sorted(self._unwoken))


async def _read_book(books: FilterBooks, conn: asyncpg.Connection, tenant_id: str) -> FilterBook:
    """The tenant's filters and their version, read in one statement (one snapshot)."""
    rows = await conn.fetch(_FILTER_BOOK, tenant_id)
    version = rows[0]["filters_version"] if rows else None
    filtered = [(r["id"], r["event_types"], r["filter"]) for r in rows if r["id"]]
    if len(filtered) < FILTERS_IN_THREAD:
        return books.load(tenant_id, version, filtered)
    return await asyncio.to_thread(books.load, tenant_id, version, filtered)  # compiles


async def _matching(book: FilterBook, event: StoredEvent) -> list[str]:
    """The filtered subscriptions that take ``event``: many filters run in a thread, so
    the event loop keeps serving while they do."""
    if len(book.wanting(event.type)) < FILTERS_IN_THREAD:
        return book.matching(event.type, event.body)
    return await asyncio.to_thread(book.matching, event.type, event.body)


class PostgresQueue(SQLQueue):
    def __init__(self, db: PostgresDatabase) -> None:
        super().__init__(db)
        self._pg = db

    @translated
    async def claim(self, request: ClaimRequest) -> list[ClaimedDelivery]:
        token = uuid.uuid4().hex
        now = request.now_ms
        params = {"now": now, "skip": list(request.skip), "lanes": request.lanes}
        async with self._pg.hot_connection() as conn:
            due = await conn.fetch(_ANY_DUE_LANE.sql, *_ANY_DUE_LANE.args(params))
            if not due:
                return []
            states = [q.lane_state(row, 0, None) for row in due]
            if any(state.room(now) is not None for state in states):
                async with conn.transaction():
                    found = await conn.fetch(_DUE_LANES.sql, *_DUE_LANES.args(params))
                    rows = await _take(conn, request, found, token) if found else []
                held = not found
            else:
                rows, held = await _claim_unlimited(conn, request, states, token)
        if held:
            self._pg.notify_work()  # due lanes, held by another worker's claim
        return claimed_deliveries(rows, token)

    @translated
    async def record(self, outcomes: Sequence[AttemptOutcome]) -> dict[str, int]:
        if not outcomes:
            return {}
        async with self._pg.hot_connection() as conn, conn.transaction():
            fifo = sorted({o.claimed.tenant_id for o in outcomes if o.claimed.ordering_key})
            for tenant_id in fifo:
                await conn.execute(_LOCK_STREAM, STREAM_LOCK + tenant_id)
            changes = sorted(outcomes, key=lambda o: o.claimed.delivery_id)
            applied = {
                row["id"]: (row["status"], row["streak"])
                for row in await conn.fetch(_RECORD, *_record_columns(changes))
            }
            wakes = LaneWakes()
            streak_now: dict[str, int] = {}
            for o in changes:
                if o.claimed.delivery_id not in applied:
                    continue
                status, streak_now[o.claimed.subscription_id] = applied[o.claimed.delivery_id]
                wakes.recorded(o, status)
                if lets_next_go(o, status):
                    let_go = _UNBLOCK_NEXT.args(q.key_params(o.claimed))
                    if await conn.fetchval(_UNBLOCK_NEXT.sql, *let_go) is not None:
                        wakes.wake(o.claimed.subscription_id, o.finished_ms)
            streaks: dict[str, int] = {}
            for sub_id, failures in streak_changes(outcomes):
                if failures is None:
                    if streak_now.get(sub_id) != 0:  # not known to be 0 already
                        await conn.execute(_RESET_STREAK.sql, *_RESET_STREAK.args({"sub": sub_id}))
                else:
                    added = _ADD_FAILURES.args({"sub": sub_id, "n": failures})
                    streaks[sub_id] = await conn.fetchval(_ADD_FAILURES.sql, *added)
            woken = list(wakes.params())
            if woken:
                await conn.execute(
                    _WAKE_LANES, [w["sub"] for w in woken], [w["due"] for w in woken]
                )
        return streaks

    async def repair(self, now_ms: int) -> int:
        def tx(conn: Connection) -> int:
            heads = conn.execute(text(q.STRANDED_HEADS)).all()
            for delivery_id, sub_id in heads:
                conn.execute(text(q.LET_GO), {"id": delivery_id})
                conn.execute(text(q.WAKE_LANE), {"sub": sub_id, "due": now_ms})
            woken = conn.execute(text(_WAKE_SLEEPING_LANES_WITH_WORK), {"now": now_ms}).all()
            return len(heads) + len(woken)

        return await self._pg.write(tx)


async def _claim_unlimited(
    conn: asyncpg.Connection, request: ClaimRequest, states: Sequence[LaneState], token: str
) -> tuple[list[asyncpg.Record], bool]:
    """Plan from the look and claim in one call (``_CLAIM``). The look took no lock, so the
    lanes planned may be held by another worker's claim while others wait: if the call
    takes nothing, plan once more without them. Returns the rows, and whether lanes it
    wanted were held (its worker should claim again in a moment)."""
    now = request.now_ms
    lanes = [state.lane(now) for state in states]
    tried = False
    for _ in range(2):
        plan = request.plan(lanes)
        wanted = {sub: n for sub, n in plan.items() if n > 0}
        if not wanted:
            break
        claim = (list(wanted), list(wanted.values()), now + request.lease_ms, token, now)
        rows: list[asyncpg.Record] = await conn.fetch(_CLAIM, *claim)
        if rows:
            return rows, False
        tried = True
        lanes = [lane for lane in lanes if lane.subscription_id not in wanted]
    return [], tried


async def _take(
    conn: asyncpg.Connection, request: ClaimRequest, found: Sequence[asyncpg.Record], token: str
) -> list[asyncpg.Record]:
    """A claim's work on the due lanes it locked (``found``): plan, lease, move the lanes on.
    The leased rows are made into deliveries after the commit, the lanes unlocked."""
    now = request.now_ms
    states = await _lane_states(conn, found, now)
    plan = request.plan([state.lane(now) for state in states])
    wanted = {sub: n for sub, n in plan.items() if n > 0}
    rows: list[asyncpg.Record] = []
    if wanted:
        lease_until = now + request.lease_ms
        rows = await conn.fetch(_TAKE, list(wanted), list(wanted.values()), lease_until, token, now)
    took: dict[str, int] = {}
    for row in rows:
        took[row["subscription_id"]] = took.get(row["subscription_id"], 0) + 1
    updates = [s.claimed(took.get(s.subscription_id, 0), now) for s in states]
    await conn.execute(
        _UPDATE_LANES,
        [u.subscription_id for u in updates],
        [u.served_ms for u in updates],
        [u.tokens for u in updates],
        [u.parked_until_ms for u in updates],
        now,
    )
    return rows


async def _lane_states(
    conn: asyncpg.Connection, found: Sequence[asyncpg.Record], now: int
) -> list[LaneState]:
    limited = [row["subscription_id"] for row in found if row["max_concurrency"] is not None]
    leased: dict[str, tuple[int, int | None]] = {}
    if limited:
        for row in await conn.fetch(_LEASED, limited, now):
            leased[row["subscription_id"]] = (row["leased"], row["ends"])
    return [q.lane_state(row, *leased.get(row["subscription_id"], (0, None))) for row in found]


def open_postgres(url: str) -> SQLStore:
    db = PostgresDatabase.from_url(url)
    return SQLStore.build(db, PostgresEvents(db), PostgresQueue(db), PartitionedRetention(db))


_LOCK_STREAM = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"
_EMIT = """
    SELECT o_seq, o_lanes FROM tidings_emit_v3($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
"""
"""Arguments: ``event_values`` (in ``EVENT_COLUMNS``' order), now, the version of the
tenant's filters the caller evaluated, the filtered subscriptions that matched."""
_EMIT_MANY = """
    SELECT r.o_seq, r.o_lanes
    FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[],
                $7::text[], $8::text[], $9::bigint[], $10::bigint[], $11::text[])
         WITH ORDINALITY AS e(id, tenant, type, created, body, request_hash, ordering_key,
                              trace_context, now, filters_version, matched, n)
    CROSS JOIN LATERAL tidings_emit_v3(
        e.id, e.tenant, e.type, e.created, e.body, e.request_hash, e.ordering_key,
        e.trace_context, e.now, e.filters_version,
        ARRAY(SELECT json_array_elements_text(e.matched::json))) AS r
    ORDER BY e.n
"""
"""``_EMIT`` for several events in one statement (so one transaction), in array order:
the columns of ``_EMIT``'s arguments, the matched subscriptions as a JSON array each."""
_Emitted = tuple[int | None, list[str]]
"""What ``_EMIT`` answers: the event's seq (None: the filters changed, nothing stored)
and the lanes it gave claimable work."""


def _emit_columns(batch: list[tuple[Any, ...]]) -> list[list[Any]]:
    columns = [list(column) for column in zip(*batch, strict=True)]
    columns[-1] = [json.dumps(matched) for matched in columns[-1]]
    return columns


_FILTER_BOOK = """
    SELECT t.filters_version, s.id, s.event_types, s.filter
    FROM tenants AS t LEFT JOIN subscriptions AS s ON s.tenant_id = t.id AND s.filter IS NOT NULL
    WHERE t.id = $1
"""
"""``FILTERS_VERSION`` and ``FILTERED`` in one statement, so in one snapshot."""
EMIT_TRIES = 3
FILTERS_IN_THREAD = 500
"""From this many distinct filters to run for the event type (about 1 ms of them)."""
_NOT_SKIPPED = "l.subscription_id <> ALL(CAST(:skip AS text[]))"
_DUE_LANES = Statement(q.DUE_LANES.format(skip=_NOT_SKIPPED, lock="FOR UPDATE OF l SKIP LOCKED"))
_ANY_DUE_LANE = Statement(q.DUE_LANES.format(skip=_NOT_SKIPPED, lock=""))
"""A claim's look, outside any transaction: the due lanes it may take, least recently
served first. None (most claims under a trickle of events, every worker woken by each
NOTIFY): the claim costs this one round trip. On lanes without cluster-wide limits the
worker plans from what it found and ``_CLAIM`` does the rest in one call; with such limits
a transaction locks the lanes (``_DUE_LANES``) and plans again from them. Lanes found due
but held by another worker's claim (``SKIP LOCKED``) make the worker claim again in a
moment, not at the next NOTIFY or poll: with few busy lanes, waiting a poll interval left
every worker but one idle through a backlog."""
_LEASED = f"""
    SELECT subscription_id, count(*) AS leased, min(due_ms) AS ends FROM deliveries
    WHERE subscription_id = ANY($1::text[]) AND {LEASED} AND due_ms > $2
    GROUP BY subscription_id
"""
_TAKE = f"""
    WITH taken AS (
        UPDATE deliveries SET due_ms = $3, claim_token = $4
        WHERE id = ANY(ARRAY(
            SELECT c.id FROM unnest($1::text[], $2::int[]) AS plan(sub, n) CROSS JOIN LATERAL (
                SELECT id FROM deliveries
                WHERE subscription_id = plan.sub AND {CLAIMABLE} AND due_ms <= $5
                ORDER BY due_ms LIMIT plan.n FOR UPDATE SKIP LOCKED) AS c))
        RETURNING *)
    {q.DETAILS.format(deliveries="taken", ids="e.seq = ANY(ARRAY(SELECT event_seq FROM taken))")}
"""
"""Lease the planned deliveries and read what sending them takes, in one round trip. Ids
and event seqs go through arrays so both tables are read by primary key whatever the
planner thinks of their sizes: joining instead, it cannot know how few rows ``LIMIT
plan.n`` gives, and a generic plan made while the tables were small (a new install, then
a burst) read every event of the table for each claim."""
_CLAIM = "SELECT * FROM tidings_claim_v1($1, $2, $3, $4, $5)"
"""A claim on lanes without cluster-wide limits, in one call outside a transaction
(migration 0014): lock the planned lanes still due, lease, move them on, and return
``DETAILS``' columns. The lanes stay locked only while it runs."""
_UPDATE_LANES = f"""
    UPDATE lanes SET served_ms = coalesce(u.served, lanes.served_ms), tokens = u.tokens,
                     tokens_ms = $5,
                     next_due_ms = CASE WHEN n.due <= $5 THEN greatest(n.due, u.parked)
                                        ELSE n.due END
    FROM unnest($1::text[], $2::bigint[], $3::float8[], $4::bigint[])
         AS u(sub, served, tokens, parked)
    CROSS JOIN LATERAL (SELECT min(due_ms) AS due FROM deliveries
                        WHERE subscription_id = u.sub AND {CLAIMABLE}) AS n
    WHERE lanes.subscription_id = u.sub
"""
"""``LaneState.after_claim`` with the next due time worked out here (``LaneUpdate.due``,
in SQL: ``greatest`` ignores a NULL), after the claim's own lease: one round trip."""
_RECORD = """
    WITH logged AS (
        INSERT INTO attempts (delivery_id, tenant_id, event_id, subscription_id, attempt,
                              outcome, status_code, elapsed_ms, response_body, error, created_ms)
        SELECT * FROM unnest($10::bigint[], $11::text[], $12::text[], $13::text[], $14::int[],
                             $15::text[], $16::int[], $17::int[], $18::text[], $19::text[],
                             $20::bigint[]))
    UPDATE deliveries AS d
    SET status = CASE (SELECT s.enabled FROM subscriptions AS s WHERE s.id = d.subscription_id)
                     WHEN TRUE THEN u.status WHEN FALSE THEN u.if_disabled ELSE u.if_deleted END,
        attempts = u.attempt, due_ms = u.due, claim_token = NULL, last_status_code = u.code,
        updated_ms = u.at
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[],
                $7::bigint[], $8::int[], $9::bigint[])
         AS u(id, token, status, if_disabled, if_deleted, attempt, due, code, at)
    WHERE d.id = ANY($1::bigint[]) AND d.id = u.id AND d.claim_token = u.token
    RETURNING d.id, d.status,
              (SELECT s.consecutive_failures FROM subscriptions AS s
               WHERE s.id = d.subscription_id) AS streak
"""
"""A batch's attempts logged and its deliveries moved on, in one round trip. Each row comes
with its status for an enabled, a disabled and a deleted subscription
(``recorded_status``), picked here from the subscription as it is now. ``d.id = ANY``
besides the join: the rows are read by primary key, never hashed from a scan of the
table (see ``_TAKE``). The failure streaks come back, so a success resets only those
that are not 0 already."""
_ATTEMPT_COLUMNS = (
    "delivery_id",
    "tenant_id",
    "event_id",
    "subscription_id",
    "attempt",
    "outcome",
    "status_code",
    "elapsed_ms",
    "response_body",
    "error",
    "created_ms",
)


def _record_columns(changes: Sequence[AttemptOutcome]) -> list[list[Any]]:
    """``_RECORD``'s arrays: the deliveries' changes, then their attempts."""
    updates = [delivery_update(o, True) for o in changes]
    columns: list[list[Any]] = [
        [u["b_id"] for u in updates],
        [u["b_token"] for u in updates],
        [u["b_status"] for u in updates],
        [recorded_status(o, False) for o in changes],
        [recorded_status(o, None) for o in changes],
        [u["b_attempt"] for u in updates],
        [u["b_due"] for u in updates],
        [u["b_code"] for u in updates],
        [u["b_now"] for u in updates],
    ]
    rows = [attempt_row(o) for o in changes]
    return columns + [[row[name] for row in rows] for name in _ATTEMPT_COLUMNS]


_UNBLOCK_NEXT = Statement(q.UNBLOCK_NEXT)
_RESET_STREAK = Statement(q.RESET_STREAK)
_ADD_FAILURES = Statement(q.ADD_FAILURES)
_WAKE_AND_NOTIFY = f"""
    WITH locked AS (
        SELECT subscription_id FROM lanes WHERE subscription_id = ANY($1::text[])
        ORDER BY subscription_id FOR UPDATE),
    woken AS (
        UPDATE lanes SET next_due_ms = least(coalesce(lanes.next_due_ms, $2), $2)
        FROM locked WHERE lanes.subscription_id = locked.subscription_id
        RETURNING 1)
    SELECT pg_notify('{CHANNEL}', '')
"""
"""One statement (its own transaction): wake these lanes, locked in id order, due at $2;
NOTIFY goes out when it commits, so a worker it wakes finds them due."""
_WAKE_SLEEPING_LANES_WITH_WORK = f"""
    WITH asleep AS (
        SELECT l.subscription_id, w.due FROM lanes AS l CROSS JOIN LATERAL (
            SELECT min(d.due_ms) AS due FROM deliveries AS d
            WHERE d.subscription_id = l.subscription_id AND {CLAIMABLE}) AS w
        WHERE w.due IS NOT NULL
          AND (l.next_due_ms IS NULL OR l.next_due_ms > greatest(w.due, :now))
        ORDER BY l.subscription_id FOR UPDATE OF l SKIP LOCKED)
    UPDATE lanes SET next_due_ms = greatest(asleep.due, :now) FROM asleep
    WHERE lanes.subscription_id = asleep.subscription_id
    RETURNING lanes.subscription_id
"""
"""Lanes asleep past their earliest claimable delivery (a lost wake: a process died
between an emit's commit and its wake). A lane held back by its limits is woken too; its
next claim parks it again. Locked lanes are skipped: whoever holds them is waking them."""
_WAKE_LANES = """
    WITH locked AS (
        SELECT subscription_id FROM lanes WHERE subscription_id = ANY($1::text[])
        ORDER BY subscription_id FOR UPDATE)
    UPDATE lanes SET next_due_ms = least(coalesce(lanes.next_due_ms, u.due), u.due)
    FROM unnest($1::text[], $2::bigint[]) AS u(sub, due), locked
    WHERE lanes.subscription_id = u.sub AND locked.subscription_id = u.sub
"""
"""``WAKE_LANE`` for several lanes, locked in id order (see there)."""
