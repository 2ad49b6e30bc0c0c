"""Wake-ups between the processes of one SQLite database: its NOTIFY.

Every process that dispatches binds a Unix datagram socket in a folder beside the
database file (``<file>.wake/``) when it first waits for work; a process that made work
due sends one byte to one of those sockets, to each in turn. So the dispatchers of
``tidings serve --workers`` (or a ``tidings worker`` started beside it) start a delivery
about as soon as a dispatcher in the API's own process would, where they used to find it
on their next look (``sqlite.PROBE_INTERVAL``, 50 ms).

Best effort by design: the looks go on, and find whatever a lost, refused or unsent
datagram would have announced. A socket whose process died without removing it (kill -9)
refuses the next datagram and is removed by its sender. Where Unix sockets are missing
(Windows) or the path is too long for one, a process just goes on looking.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import structlog

log = structlog.get_logger("tidings.storage")

PEERS_FRESH_FOR = 1.0
"""Seconds a sender trusts its list of sockets: a process that starts listening is woken
by the others within about this long (and finds work by looking meanwhile)."""
MAX_PATH = 103
"""A Unix socket's path must fit in ``sun_path`` with its NUL (108 bytes on Linux, 104 on
macOS)."""
SUFFIX = ".sock"


class ProcessWakes:
    """The sockets of the processes on one database file (``folder``; None: no file)."""

    def __init__(self, folder: Path | None) -> None:
        self._folder = folder if hasattr(socket, "AF_UNIX") else None
        self._listener: socket.socket | None = None
        self._own: Path | None = None
        self._sender: socket.socket | None = None
        self._peers: list[Path] = []
        self._peers_read = -PEERS_FRESH_FOR
        self._unable = False
        """Binding failed once: not tried again (the error is logged once)."""
        self._turn = 0
        self._asked = 0
        """Wakes asked for since the last were sent."""
        self._flush: asyncio.Handle | None = None

    def listen(self, on_wake: Callable[[], None]) -> None:
        """Call ``on_wake`` (on this event loop) when another process sends a wake."""
        if self._folder is None or self._listener is not None or self._unable:
            return
        own = self._folder / f"{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        if len(os.fsencode(own)) > MAX_PATH:
            log.info("process_wakes_off", reason="path too long for a Unix socket", path=str(own))
            self._folder = None
            return
        listener = None
        try:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._folder.mkdir(mode=0o700, exist_ok=True)
            listener.setblocking(False)
            listener.bind(os.fsencode(own))
        except OSError as exc:  # out of descriptors, a file system without sockets, ...
            if listener is not None:
                listener.close()
            self._unable = True  # it goes on looking; sending to the others still works
            log.info("process_wakes_off", reason=str(exc), path=str(own))
            return
        self._listener, self._own = listener, own

        def drain() -> None:
            with contextlib.suppress(OSError):
                while listener.recv(64):
                    pass
            on_wake()

        asyncio.get_running_loop().add_reader(listener.fileno(), drain)

    def send(self) -> None:
        """Wake one other listening process, each in its turn: a woken dispatcher claims
        all it has room for, and waking every one made each emit cost every dispatcher a
        claim (at 1,000 emits a second on two cores, p99 53 ms instead of 97).

        The wakes asked for in one turn of the event loop go out together after it, one
        to each of as many processes: a group commit finishes dozens of emits at once,
        and a datagram each cost the API's event loop a system call each, and the GIL
        back from the SQLite writer after each (``sendto`` lets go of it)."""
        if self._folder is None:
            return
        self._asked += 1
        if self._flush is None:
            try:
                self._flush = asyncio.get_running_loop().call_soon(self._send_asked)
            except RuntimeError:  # no event loop: at once
                self._send_asked()

    def _send_asked(self) -> None:
        self._flush = None
        asked, self._asked = self._asked, 0
        if self._folder is None:
            return
        peers = self._fresh_peers()
        wanted = min(asked, len(peers))
        while wanted and peers:
            self._turn = (self._turn + 1) % len(peers)
            peer = peers[self._turn]
            try:
                self._sending_socket().sendto(b"w", os.fsencode(peer))
            except (ConnectionRefusedError, FileNotFoundError):
                self._forget(peer)  # its process is gone: the next one's turn
                wanted = min(wanted, len(peers))
                continue
            except OSError:
                pass  # its buffer is full (it has wakes to read) or the like
            wanted -= 1

    def close(self) -> None:
        """Send what was asked for this turn (an emit acknowledged just now must wake the
        others), then nothing more: a ``send`` after ``close`` is dropped."""
        if self._flush is not None:
            self._flush.cancel()
            self._send_asked()
        self._folder = None
        if self._listener is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed already
                asyncio.get_running_loop().remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
        if self._own is not None:
            with contextlib.suppress(OSError):
                self._own.unlink()
            self._own = None
        if self._sender is not None:
            self._sender.close()
            self._sender = None

    def _fresh_peers(self) -> list[Path]:
        now = time.monotonic()
        if now - self._peers_read >= PEERS_FRESH_FOR:
            self._peers_read = now
            assert self._folder is not None
            try:
                found = [p for p in self._folder.iterdir() if p.name.endswith(SUFFIX)]
            except OSError:  # no process listens yet: no folder
                found = []
            self._peers = [p for p in found if p != self._own]
        return self._peers

    def _sending_socket(self) -> socket.socket:
        """Raises ``OSError`` (which ``send`` ignores) if no socket can be made now."""
        if self._sender is None:
            self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sender.setblocking(False)
        return self._sender

    def _forget(self, peer: Path) -> None:
        with contextlib.suppress(OSError):
            peer.unlink()
        with contextlib.suppress(ValueError):
            self._peers.remove(peer)
