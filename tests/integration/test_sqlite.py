"""The SQLite connector's writer: writes that queue while one runs commit as a group, each
in a savepoint of its own (``SQLiteDatabase.write``); across processes, one writer at a
time under the write lock (``storage/write_lock.py``)."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import Connection, event, text
from sqlalchemy.exc import OperationalError

from tidings.storage import sqlite as sqlite_module
from tidings.storage.errors import StorageUnavailable
from tidings.storage.sqlite import SQLiteDatabase
from tidings.storage.write_lock import WriteLock


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SQLiteDatabase]:
    database = SQLiteDatabase.from_url(f"sqlite:///{tmp_path / 'writer.db'}")
    await database.write(lambda conn: conn.execute(text("CREATE TABLE t (n INTEGER)")))
    yield database
    await database.close()


def insert(n: int, then: Callable[[], None] = lambda: None) -> Callable[[Connection], int]:
    def tx(conn: Connection) -> int:
        conn.execute(text("INSERT INTO t (n) VALUES (:n)"), {"n": n})
        then()
        return n

    return tx


def fail(exc: Exception) -> Callable[[], None]:
    def raise_it() -> None:
        raise exc

    return raise_it


async def stored(db: SQLiteDatabase) -> list[int]:
    rows = await db.read(lambda conn: conn.execute(text("SELECT n FROM t ORDER BY n")).all())
    return [row.n for row in rows]


async def queued_behind_a_busy_writer(
    db: SQLiteDatabase, writes: list[Callable[[Connection], int]], *, brief: bool = False
) -> list[int | BaseException]:
    """Hold the writer in a first write, queue ``writes`` meanwhile, then let it go: the
    queued ones are written as one group. Returns each one's result or error."""
    busy, release = threading.Event(), threading.Event()
    first = asyncio.create_task(db.write(insert(0, holding(busy, release))))
    await asyncio.to_thread(busy.wait, 10)
    pending = [asyncio.create_task(db.write(write, brief=brief)) for write in writes]
    await asyncio.sleep(0)  # every write is queued before the writer is free
    release.set()
    await first
    return await asyncio.gather(*pending, return_exceptions=True)


def holding(busy: threading.Event, release: threading.Event) -> Callable[[], None]:
    """What the first write does inside its transaction: say so, then wait to be let go."""

    def hold() -> None:
        busy.set()
        release.wait(10)

    return hold


def count_commits(db: SQLiteDatabase) -> list[int]:
    commits: list[int] = []
    event.listen(db.writer, "commit", lambda conn: commits.append(1))
    return commits


async def test_writes_that_queue_behind_one_commit_together(db: SQLiteDatabase) -> None:
    commits = count_commits(db)
    results = await queued_behind_a_busy_writer(db, [insert(1), insert(2), insert(3)])
    assert results == [1, 2, 3]
    assert await stored(db) == [0, 1, 2, 3]
    assert len(commits) == 2  # the first write's, then the group's


@pytest.mark.parametrize("brief", [False, True])
async def test_a_write_that_fails_in_a_group_is_undone_alone(
    db: SQLiteDatabase, brief: bool
) -> None:
    """Its caller gets its error; the others of the group commit as if it had not been.
    ``brief``: the group is written on the event loop (and the same holds there)."""
    bad = insert(2, fail(ValueError("no")))
    results = await queued_behind_a_busy_writer(db, [insert(1), bad, insert(3)], brief=brief)
    assert results[0] == 1 and results[2] == 3
    assert isinstance(results[1], ValueError)
    assert await stored(db) == [0, 1, 3]


@pytest.mark.parametrize("brief", [False, True])
async def test_a_statement_that_fails_in_a_group_is_undone_alone(
    db: SQLiteDatabase, brief: bool
) -> None:
    def bad(conn: Connection) -> int:
        conn.execute(text("INSERT INTO t (n) VALUES (2)"))
        conn.execute(text("INSERT INTO no_such_table (n) VALUES (2)"))
        return 2

    results = await queued_behind_a_busy_writer(db, [insert(1), bad, insert(3)], brief=brief)
    assert results[0] == 1 and results[2] == 3
    assert isinstance(results[1], OperationalError)
    assert await stored(db) == [0, 1, 3]


@pytest.mark.parametrize("brief", [False, True])
async def test_an_outage_in_a_group_fails_the_whole_group(db: SQLiteDatabase, brief: bool) -> None:
    """The connection is suspect (a full disk, say): nothing of the group is kept, and
    every caller is told, so none of them acknowledges a write that is not there."""
    outage = insert(2, fail(sqlite3.OperationalError("disk I/O error")))
    results = await queued_behind_a_busy_writer(db, [insert(1), outage, insert(3)], brief=brief)
    assert all(isinstance(result, StorageUnavailable) for result in results)
    assert await stored(db) == [0]
    assert await db.write(insert(4), brief=brief) == 4  # a fresh connection once it is back
    assert await stored(db) == [0, 4]


async def test_the_event_loop_never_opens_the_writers_connection(db: SQLiteDatabase) -> None:
    """Opening one can wait out the busy timeout (its pragmas): after an outage dropped
    it, the next brief write opens a new one on the write thread, and the loop goes on
    using it."""
    outage = insert(1, fail(sqlite3.OperationalError("disk I/O error")))
    with pytest.raises(StorageUnavailable):
        await db.write(outage, brief=True)
    threads: list[str] = []
    await db.write(on_thread(threads, 2), brief=True)
    await db.write(on_thread(threads, 3), brief=True)
    loop = threading.current_thread().name
    assert threads[0] != loop and threads[1] == loop
    assert await stored(db) == [2, 3]


async def test_a_caller_cancelled_before_its_write_began_leaves_it_unwritten(
    db: SQLiteDatabase,
) -> None:
    """As without groups: a write whose caller gave up before it began never runs (a
    claim nobody waits for would lease deliveries nobody sends); the rest of its group do."""
    busy, release = threading.Event(), threading.Event()
    first = asyncio.create_task(db.write(insert(0, holding(busy, release))))
    await asyncio.to_thread(busy.wait, 10)
    gone, kept = asyncio.create_task(db.write(insert(1))), asyncio.create_task(db.write(insert(2)))
    await asyncio.sleep(0)
    gone.cancel()
    release.set()
    await first
    assert await kept == 2
    assert await stored(db) == [0, 2]


async def test_a_write_alone_is_committed_apart_from_the_writes_around_it(
    db: SQLiteDatabase,
) -> None:
    """An app's transaction may commit or roll back by itself: it never shares one."""
    commits = count_commits(db)
    busy, release = threading.Event(), threading.Event()
    first = asyncio.create_task(db.write(insert(0, holding(busy, release))))
    await asyncio.to_thread(busy.wait, 10)
    queued = [
        asyncio.create_task(db.write(insert(1))),
        asyncio.create_task(db.write(insert(2))),
        asyncio.create_task(db.write(insert(3), alone=True)),
        asyncio.create_task(db.write(insert(4))),
    ]
    await asyncio.sleep(0)
    release.set()
    await first
    assert await asyncio.gather(*queued) == [1, 2, 3, 4]
    assert len(commits) == 4  # the first; 1 and 2 together; 3 alone; 4
    assert await stored(db) == [0, 1, 2, 3, 4]


async def test_a_failed_write_forgets_the_filters_read_inside_it(db: SQLiteDatabase) -> None:
    """A write may have read (and cached) a tenant's filters as of a version that never
    committed; they are read again after any write fails."""
    db.filters.load("ten_a", 7, [])
    with pytest.raises(ValueError):
        await db.write(insert(1, fail(ValueError("no"))))
    assert db.filters.get("ten_a") is None
    db.filters.load("ten_a", 7, [])
    results = await queued_behind_a_busy_writer(db, [insert(2), insert(3, fail(KeyError()))])
    assert results[0] == 2 and isinstance(results[1], KeyError)
    assert db.filters.get("ten_a") is None


async def test_a_writer_on_the_same_file_waits_for_the_write_lock_not_on_sqlites_busy_sleep(
    db: SQLiteDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two databases on one file exclude each other as two processes would. The second has
    no busy timeout: had it reached ``BEGIN IMMEDIATE`` while the first wrote, SQLite
    would have refused it at once ("database is locked")."""
    monkeypatch.setattr("tidings.storage.sqlite.BUSY_TIMEOUT_MS", 0)
    other = SQLiteDatabase.from_url(f"sqlite:///{tmp_path / 'writer.db'}")
    try:
        busy, release = threading.Event(), threading.Event()
        first = asyncio.create_task(db.write(insert(1, holding(busy, release))))
        await asyncio.to_thread(busy.wait, 10)
        second = asyncio.create_task(other.write(insert(2)))
        done, _ = await asyncio.wait([second], timeout=0.2)
        assert not done, "the second writer went ahead while the first held the file"
        release.set()
        assert await first == 1 and await second == 2
        assert await stored(db) == [1, 2]
    finally:
        await other.close()


@pytest.mark.parametrize("brief", [False, True])
async def test_a_process_killed_while_it_holds_the_write_lock_holds_up_no_one(
    db: SQLiteDatabase, tmp_path: Path, brief: bool
) -> None:
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLD_THE_LOCK,
        str(tmp_path / "writer.db.writer"),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and await holder.stdout.readline() == b"held\n"
        write = asyncio.create_task(db.write(insert(1), brief=brief))
        done, _ = await asyncio.wait([write], timeout=0.2)
        assert not done, "the write went ahead while another process held the lock"
        holder.kill()
        assert await asyncio.wait_for(write, 10) == 1
    finally:
        if holder.returncode is None:
            holder.kill()
        await holder.wait()


HOLD_THE_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(60)
"""


async def test_writes_go_on_where_the_write_lock_cannot_be_had(tmp_path: Path) -> None:
    lock = WriteLock(tmp_path / "no such folder" / "writer.db.writer")
    database = SQLiteDatabase.from_url(f"sqlite:///{tmp_path / 'writer.db'}")
    database._write_lock = lock
    try:
        await database.write(lambda conn: conn.execute(text("CREATE TABLE t (n INTEGER)")))
        assert await database.write(insert(1)) == 1
        assert await stored(database) == [1]
    finally:
        await database.close()


def on_thread(threads: list[str], n: int) -> Callable[[Connection], int]:
    """``insert(n)``, noting the thread it ran on."""
    return insert(n, lambda: threads.append(threading.current_thread().name))


async def test_brief_writes_run_on_the_event_loop_while_no_other_process_writes(
    db: SQLiteDatabase,
) -> None:
    threads: list[str] = []
    await db.write(on_thread(threads, 1), brief=True)
    await db.write(on_thread(threads, 2))
    await asyncio.gather(*(db.write(on_thread(threads, n), brief=True) for n in (3, 4)))
    loop = threading.current_thread().name
    assert threads[0] == loop and threads[1] != loop and threads[2:] == [loop, loop]
    assert await stored(db) == [1, 2, 3, 4]


async def test_a_brief_write_waits_for_a_writer_that_is_not_tidings_off_the_event_loop(
    db: SQLiteDatabase, tmp_path: Path
) -> None:
    """The sqlite3 shell, say, holds the file: the loop must not sit out the busy
    timeout; the write thread does, and writes once the file is free."""
    shell = sqlite3.connect(tmp_path / "writer.db", isolation_level=None)
    try:
        shell.execute("BEGIN IMMEDIATE")
        threads: list[str] = []
        write = asyncio.create_task(db.write(on_thread(threads, 1), brief=True))
        done, _ = await asyncio.wait([write], timeout=0.2)
        assert not done
        shell.execute("COMMIT")
        assert await asyncio.wait_for(write, 10) == 1
        assert threads != [threading.current_thread().name]
    finally:
        shell.close()


async def test_a_long_queue_of_brief_writes_is_written_on_the_thread_not_the_loop(
    db: SQLiteDatabase,
) -> None:
    """Behind a slow write the queue grows; written on the loop it would stall it."""
    threads: list[str] = []
    writes = [on_thread(threads, n) for n in (1, 2)]
    few = await queued_behind_a_busy_writer(db, writes, brief=True)
    assert few == [1, 2] and threads == [threading.current_thread().name] * 2
    threads.clear()
    many = [on_thread(threads, n) for n in range(3, 3 + sqlite_module.HERE_AT_MOST + 1)]
    assert len(await queued_behind_a_busy_writer(db, many, brief=True)) == len(many)
    assert threading.current_thread().name not in threads


async def test_every_write_queued_at_close_is_refused_not_left_waiting(
    db: SQLiteDatabase,
) -> None:
    """Behind a write on the thread, groups queue (an ``alone`` write splits them); close
    comes: each caller hears of it."""
    busy, release = threading.Event(), threading.Event()
    first = asyncio.create_task(db.write(insert(0, holding(busy, release))))
    await asyncio.to_thread(busy.wait, 10)
    queued = [
        asyncio.create_task(db.write(insert(1), brief=True)),
        asyncio.create_task(db.write(insert(2), alone=True)),
        asyncio.create_task(db.write(insert(3), brief=True)),
    ]
    await asyncio.sleep(0)
    threading.Timer(0.1, release.set).start()  # close waits for the thread's write
    await db.close()
    assert await first == 0
    results = await asyncio.wait_for(asyncio.gather(*queued, return_exceptions=True), 5)
    assert all(isinstance(result, RuntimeError) for result in results), results


async def test_behind_a_writer_that_is_not_tidings_every_process_gives_up_after_one_busy_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sqlite3 shell holds the file. The process holding the write lock sits out its
    busy timeout; those waiting for the lock meanwhile must not then sit out one more
    each, in turn: every one answers 503 after about one busy timeout."""
    busy_ms = 1000
    monkeypatch.setattr(sqlite_module, "BUSY_TIMEOUT_MS", busy_ms)
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    processes = [SQLiteDatabase.from_url(url) for _ in range(3)]  # a write lock each
    shell = None
    try:
        await processes[0].write(lambda conn: conn.execute(text("CREATE TABLE t (n INTEGER)")))
        shell = sqlite3.connect(tmp_path / "shared.db", isolation_level=None)
        shell.execute("BEGIN IMMEDIATE")
        loop = asyncio.get_running_loop()

        async def seconds_to_give_up(db: SQLiteDatabase) -> float:
            asked = loop.time()
            with pytest.raises(StorageUnavailable):
                await db.write(insert(1), brief=True)
            return loop.time() - asked

        waited = await asyncio.gather(*(seconds_to_give_up(db) for db in processes))
        assert max(waited) < 1.7 * busy_ms / 1000, waited  # not 1, 2, 3 busy timeouts
        shell.execute("ROLLBACK")
        assert await processes[1].write(insert(2)) == 2  # and writes go on once it is free
    finally:
        if shell is not None:
            shell.close()
        for db in processes:
            await db.close()


@pytest.mark.parametrize("brief", [False, True])
async def test_a_write_after_close_is_refused(db: SQLiteDatabase, brief: bool) -> None:
    await db.close()
    with pytest.raises(RuntimeError):
        await db.write(insert(1), brief=brief)


async def test_a_child_forked_while_the_lock_is_held_does_not_keep_it_after_its_parent_dies(
    tmp_path: Path,
) -> None:
    path = tmp_path / "writer.db.writer"
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLD_AND_FORK, str(path), stdout=asyncio.subprocess.PIPE
    )
    assert parent.stdout is not None
    child = int(await parent.stdout.readline())
    try:
        parent.kill()
        await parent.wait()
        ours = WriteLock(path)
        assert ours.try_hold(), "the forked child still holds its dead parent's lock"
        ours.close()
    finally:
        os.kill(child, signal.SIGKILL)


HOLD_AND_FORK = """
import os, sys, time
from pathlib import Path
from tidings.storage.write_lock import WriteLock
lock = WriteLock(Path(sys.argv[1]))
assert lock.try_hold()
child = os.fork()
if child == 0:
    os.close(1)  # the test waits for its parent's output to end
    time.sleep(60)
    os._exit(0)
print(child, flush=True)
time.sleep(60)
"""
