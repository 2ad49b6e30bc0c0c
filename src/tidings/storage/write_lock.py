"""One writer at a time across the processes on one SQLite file, handed over at once.

SQLite lets one connection write at a time. Another that wants to write is told
SQLITE_BUSY, and its busy timeout tries again after sleeping 1, 2, 5, 10, 15, 20, 25,
25, 25, 50, 50, then 100 ms at a time (``sqliteDefaultBusyCallback``): not when the lock
is let go. ``tidings serve --workers 2`` has three processes writing to one file; at
1,000 events/s (``bench/benchmark.py --rate 1000``) four in ten of the dispatchers' write
transactions waited over 1 ms for their ``BEGIN IMMEDIATE``, some over 500 ms, mostly
asleep while the lock was free: the emit → receive p99 was 197 ms.

So each tidings process takes an exclusive ``flock`` on a file beside the database
(``<file>.writer``) around each of its write transactions, and the kernel wakes a waiter
as soon as it is let go. The busy timeout stays, for writers that are not tidings (the
``sqlite3`` shell, a backup). The kernel lets go of a process's lock when the process
dies, kill -9 included (a child forked without exec closes its copy of the parent's file
first thing, or it would hold the lock of a parent killed while holding it). A process
stopped while it holds the lock (SIGSTOP) holds up the others' writes until it goes on,
as it would with SQLite's own lock.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Iterator
from pathlib import Path

import structlog

try:
    import fcntl
except ImportError:  # Windows: SQLite's busy timeout alone
    fcntl = None  # type: ignore[assignment]

log = structlog.get_logger("tidings.storage")

SUFFIX = ".writer"

_LOCKS: weakref.WeakSet[WriteLock] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """The parent's open file, and with it any lock the parent holds, must not live on in
    a forked child (a parent killed -9 would leave it held while the child lives)."""
    for lock in list(_LOCKS):
        lock.close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class WriteLock:
    """The lock on ``path`` (None: no file to share, e.g. ``:memory:``)."""

    def __init__(self, path: Path | None) -> None:
        self._path = path if fcntl is not None else None
        self._fd: int | None = None
        _LOCKS.add(self)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock (waiting for it) while the block runs. Where the lock cannot be
        had at all (a file system without ``flock``), writes go on under SQLite's lock
        alone, said once in the log."""
        fd = self._open()
        if fd is None:
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            self._give_up(exc)
            yield
            return
        try:
            yield
        finally:
            self.let_go()

    def try_hold(self) -> bool:
        """Take the lock if no other process holds it; False if one does, or if there is
        no lock to take (then nothing tells this process that it writes alone)."""
        fd = self._open()
        if fd is None:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True

    def let_go(self) -> None:
        """Let go of the lock (what was written under it is written: an error here is
        logged, and closing the file lets go of it all the same)."""
        if self._fd is None:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        except OSError as exc:
            self._give_up(exc)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = None

    def _open(self) -> int | None:
        if self._path is None:
            return None
        if self._fd is None:
            try:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                self._give_up(exc)
                return None
        return self._fd

    def _give_up(self, exc: OSError) -> None:
        log.info("write_lock_off", reason=str(exc), path=str(self._path))
        self.close()
        self._path = None
