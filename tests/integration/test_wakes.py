"""Wake-ups between the processes of one SQLite database (``storage/wakes.py``), and what
they spare the database file: a claim that finds nothing takes no write lock."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.queue import take_everything
from tidings.domain.clock import now_ms
from tidings.storage import sqlite as sqlite_module
from tidings.storage.records import ClaimRequest
from tidings.storage.sql import SQLStore
from tidings.storage.sqlite import open_sqlite
from tidings.storage.wakes import ProcessWakes


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "t.db.wake"


async def woken(wakes: ProcessWakes) -> asyncio.Event:
    event = asyncio.Event()
    wakes.listen(event.set)
    return event


def sockets_in(folder: Path) -> list[str]:
    return [path.name for path in folder.iterdir()]


async def test_each_send_wakes_another_listener_in_turn_and_never_the_sender(
    folder: Path,
) -> None:
    sender, first, second = ProcessWakes(folder), ProcessWakes(folder), ProcessWakes(folder)
    own = await woken(sender)
    heard = [await woken(first), await woken(second)]
    try:
        sender.send()
        waits = [asyncio.ensure_future(event.wait()) for event in heard]
        async with asyncio.timeout(5):
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for wait in waits:
            wait.cancel()
        await asyncio.sleep(0.05)  # a second wake, were one sent, is in by now
        assert sum(event.is_set() for event in heard) == 1
        sender.send()
        async with asyncio.timeout(5):
            for event in heard:
                await event.wait()
        assert not own.is_set()
    finally:
        for wakes in (sender, first, second):
            wakes.close()
    assert sockets_in(folder) == []  # each took its socket away


async def test_the_wakes_asked_in_one_turn_of_the_loop_reach_each_process_once(
    folder: Path,
) -> None:
    """A group commit finishes many emits at once, each asking for a wake."""
    peers = bound_sockets(folder, "1-a.sock", "2-b.sock")
    sender = ProcessWakes(folder)
    try:
        for _ in range(10):
            sender.send()
        await asyncio.sleep(0)  # the loop's turn ends: the wakes go out
        assert [len(datagrams(peer)) for peer in peers] == [1, 1]
        sender.send()
        await asyncio.sleep(0)
        assert sorted(len(datagrams(peer)) for peer in peers) == [0, 1]
    finally:
        sender.close()
        for peer in peers:
            peer.close()


async def test_a_wake_asked_just_before_close_is_sent_and_none_after(folder: Path) -> None:
    """An emit acknowledged in the turn the process closes must still wake the others."""
    (peer,) = bound_sockets(folder, "1-a.sock")
    sender = ProcessWakes(folder)
    try:
        sender.send()
        sender.close()
        assert datagrams(peer) == [b"w"]
        sender.send()
        await asyncio.sleep(0)
        assert datagrams(peer) == []
    finally:
        sender.close()
        peer.close()


def bound_sockets(folder: Path, *names: str) -> list[socket.socket]:
    """Sockets in ``folder`` as listening processes bind them, read here by hand."""
    folder.mkdir()
    bound = []
    for name in names:
        peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        peer.bind(str(folder / name))
        peer.setblocking(False)
        bound.append(peer)
    return bound


def datagrams(peer: socket.socket) -> list[bytes]:
    received = []
    with contextlib.suppress(BlockingIOError):
        while True:
            received.append(peer.recv(64))
    return received


async def test_the_socket_of_a_process_that_died_is_removed_and_the_next_one_woken(
    folder: Path,
) -> None:
    alive = ProcessWakes(folder)
    heard = await woken(alive)
    dead = folder / "4242-deadbeef.sock"
    killed = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    killed.bind(str(dead))
    killed.close()  # as kill -9 leaves it: the file stays, nobody reads it
    sender = ProcessWakes(folder)
    try:
        sender.send()
        sender.send()  # whichever came first in turn, both have been tried now
        async with asyncio.timeout(5):
            await heard.wait()
    finally:
        sender.close()
        alive.close()
    assert sockets_in(folder) == []


async def test_a_path_too_long_for_a_socket_leaves_the_process_looking(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120) / "t.db.wake"
    wakes = ProcessWakes(deep)
    try:
        await woken(wakes)
        wakes.send()  # nothing to send to, nothing raised
    finally:
        wakes.close()
    assert not deep.exists()


@pytest.fixture
async def two_processes(tmp_path: Path) -> AsyncIterator[tuple[SQLStore, SQLStore]]:
    """Two stores on one file, as ``serve`` and a worker beside it would have."""
    url = f"sqlite:///{tmp_path / 't.db'}"
    api, worker = open_sqlite(url), open_sqlite(url)
    await api.migrate()
    yield api, worker
    await api.close()
    await worker.close()


async def test_a_dispatcher_in_another_process_is_woken_at_once(
    two_processes: tuple[SQLStore, SQLStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the wake it would find the work only at its next look, here a minute away."""
    api, worker = two_processes
    monkeypatch.setattr(sqlite_module, "PROBE_INTERVAL", 60)
    waiting = asyncio.create_task(worker.queue.wait_for_work(60))
    await asyncio.sleep(0.05)  # listening (it binds its socket when it starts waiting)
    api.queue.notify_work()
    async with asyncio.timeout(5):
        await waiting


async def test_a_claim_that_finds_nothing_takes_no_write_lock(
    two_processes: tuple[SQLStore, SQLStore], tmp_path: Path
) -> None:
    """Another process holds the file's write lock (a long write): a claim with nothing
    due answers at once instead of queueing behind it for up to the busy timeout."""
    _, worker = two_processes
    holder = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        async with asyncio.timeout(5):
            claimed = await worker.queue.claim(ClaimRequest(now_ms(), 30_000, take_everything))
        assert claimed == []
    finally:
        holder.execute("ROLLBACK")
        holder.close()
