"""A sender on libcurl's multi interface (pycurl), run on its own thread.

Why: on this project's 2-core benchmark machine aiohttp tops out near 3,500 signed POSTs/s
and, worse for fairness, spends the event loop's time parsing responses in bursts;
libcurl does the HTTP work in C on another thread, and the event loop only hands over
requests and takes back results, a batch at a time (figures in the README's benchmarks).

The delivery rules are the same as :class:`~tidings.dispatcher.sender.AiohttpSender`'s:
one POST, no redirects, a total timeout (connect included), at most
``RESPONSE_READ_LIMIT`` bytes of the response read (the transfer stops there), HTTP/1.1
keep-alive per host, TLS verified. The SSRF guard decides the address: names are resolved
(and checked) here, on the event loop, and pinned with ``CURLOPT_RESOLVE``, so libcurl
never resolves a name itself; IP literals are checked as they are; and libcurl's
open-socket hook checks, once more, the address it is about to connect to.

Through an egress proxy (``TIDINGS_EGRESS_PROXY``) every delivery is a CONNECT tunnel
(http too) to the checked address (``CURLOPT_CONNECT_TO``), with the name kept for the
Host header, SNI and the certificate check: the proxy never resolves the receiver's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import math
import os
import queue
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pycurl
import structlog
import yarl

from tidings.dispatcher.guard import BlockedAddress, literal_address
from tidings.dispatcher.sender import (
    RESPONSE_READ_LIMIT,
    RETRY_AFTER_STATUSES,
    USER_AGENT,
    SenderOptions,
    answered,
    unanswered,
)
from tidings.domain.cache import BoundedCache
from tidings.domain.deliveries import AttemptResult, Failure

DNS_SECONDS = 60.0
"""How long a checked resolution is reused (aiohttp's connector cache does the same)."""
_DNS_CACHE_SIZE = 10_000
_BLOCKED_SOCKET = pycurl.SOCKET_BAD
log = structlog.get_logger("tidings.dispatcher")
_Pin = tuple[str | None, float]
"""A CURLOPT_RESOLVE entry (None: an IP literal) and when it expires (monotonic)."""
_REMEMBERED_URL_LENGTH = 512
"""Longer URLs are converted each time: the cache of converted URLs stays a few MiB even
when a transformation sets a new, long URL on every event."""
_UNGUARDED: _Pin = (None, math.inf)
"""With no SSRF guard (tests of the sender alone), libcurl resolves names itself."""


@dataclass
class _Job:
    url: str
    body: bytes
    headers: list[str]
    pinned: str | None
    future: asyncio.Future[AttemptResult]
    started: float = field(default_factory=time.perf_counter)
    received: bytearray = field(default_factory=bytearray)
    head: io.BytesIO = field(default_factory=io.BytesIO)
    """The response's header lines, read only for a Retry-After."""
    blocked: str | None = None
    truncated: bool = False
    """The response went on past ``RESPONSE_READ_LIMIT``; the transfer was stopped there."""
    sockets: list[socket.socket] = field(default_factory=list)
    """Sockets made for libcurl, which keeps duplicates of them: closed when it is done."""


class CurlSender:
    """Create it inside the event loop that uses it; ``close`` stops its thread."""

    def __init__(self, options: SenderOptions) -> None:
        self._timeout = options.timeout
        self._guard = options.guard
        self._proxy = options.proxy
        self._trusted = _trusted_pem(options.ca_bundle) if options.ca_bundle else None
        self._loop = asyncio.get_running_loop()
        self._dns: BoundedCache[tuple[str, int], _Pin] = BoundedCache(_DNS_CACHE_SIZE)
        self._targets: BoundedCache[str, tuple[str, tuple[str, int]]] = BoundedCache(
            _DNS_CACHE_SIZE
        )
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        self._max_connections = options.max_connections
        self._closing = False
        self._woken = False
        self._engine, self._thread = self._start_engine()

    def _start_engine(self, *, replacing: bool = False) -> tuple[_Engine, threading.Thread]:
        self._woken = False  # a dead thread may have left it set with its byte unread
        engine = _Engine(self, self._max_connections, replacing=replacing)
        thread = threading.Thread(target=engine.run, name="tidings-curl", daemon=True)
        thread.start()
        return engine, thread

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> AttemptResult:
        started = time.perf_counter()
        if self._closing:
            return unanswered(started, "the sender is closed", Failure.CONNECTION)
        try:
            url, host_port = self._target(url)
            known = self._known_pin(host_port)
            if known is not None:
                pinned = known[0]
            else:
                async with asyncio.timeout(self._timeout):  # it covers DNS, as aiohttp's does
                    pinned = await self._pin(host_port)
        except TimeoutError:
            return unanswered(started, f"timeout after {self._timeout:g}s", Failure.TIMEOUT)
        except BlockedAddress as exc:
            return unanswered(started, f"blocked: {exc}", Failure.BLOCKED)
        except (OSError, ValueError) as exc:  # UnicodeError is a ValueError
            return unanswered(started, f"{type(exc).__name__}: {exc}", Failure.CONNECTION)
        if self._closing:  # closed while the name was resolved: the wake pipe may be gone
            return unanswered(started, "the sender is closed", Failure.CONNECTION)
        lines = [f"{name}: {value}" for name, value in headers.items()]
        lines += ["Content-Type: application/json", f"User-Agent: {USER_AGENT}", "Expect:"]
        job = _Job(url, body, lines, pinned, self._loop.create_future(), started)
        self._jobs.put(job)
        self._restart_if_dead()
        self._wake()
        return await job.future

    def _restart_if_dead(self, *, replacing: bool = False) -> None:
        """A bug that kills the engine fails what it held; what is queued then is taken by
        a new engine, started by the next POST or, if jobs wait already, by the dying
        engine's call (``_engine_died``). On the event loop only, so never two at once;
        never while closing (``close`` fails what is left)."""
        if self._engine.dead and not self._closing:
            log.error("curl_engine_restarted")
            self._engine, self._thread = self._start_engine(replacing=replacing)

    def _engine_died(self, engine: _Engine) -> None:
        """Called by an engine a bug killed, once it has failed what it held. Jobs queued
        meanwhile were taken by nobody: a new engine takes them, unless ``engine`` was
        itself such a replacement and died before taking any (a bug that kills every
        engine at once): then they fail, and the next POST tries again. So a broken engine
        is started at most twice per batch of POSTs, never in a loop."""
        if engine is not self._engine or self._jobs.empty():
            return
        if engine.replacing and not engine.took_jobs:
            self._fail_queued()
        else:
            self._restart_if_dead(replacing=True)

    def _fail_queued(self) -> None:
        """Fail what no engine will take (on the event loop, with no engine running)."""
        left = []
        while not self._jobs.empty():
            job = self._jobs.get_nowait()
            if job is not None:
                left.append(job)
        self._finished(_stopped(left))

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._jobs.put(None)
        self._woken = False
        self._wake()
        await asyncio.to_thread(self._thread.join)
        self._fail_queued()
        os.close(self._wake_read)
        os.close(self._wake_write)
        if self._guard is not None:
            await self._guard.close()

    def _wake(self) -> None:
        """One byte in the pipe per batch, not per POST (see ``_Engine._take_jobs``)."""
        if self._woken:
            return
        self._woken = True
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_write, b"x")

    def _target(self, url: str) -> tuple[str, tuple[str, int]]:
        """``url`` as libcurl takes it (ASCII: IDNA host, percent-encoded path) and its
        host and port; remembered, since a subscription sends to one URL again and again."""
        known = self._targets.get(url)
        if known is None:
            ascii_url = str(yarl.URL(url))
            parts = urlsplit(ascii_url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            known = (ascii_url, (parts.hostname or "", port))
            if len(ascii_url) <= _REMEMBERED_URL_LENGTH:
                self._targets.put(url, known)
        return known

    def _known_pin(self, host_port: tuple[str, int]) -> _Pin | None:
        """The pin already known for ``host_port`` (see ``_pin``), or None."""
        if self._guard is None:
            return _UNGUARDED
        cached = self._dns.get(host_port)
        if cached is not None and cached[1] > time.monotonic():
            return cached
        return None

    async def _pin(self, host_port: tuple[str, int]) -> str | None:
        """Where libcurl may connect for ``host_port``: the checked addresses of a name as a
        CURLOPT_RESOLVE entry, or through a proxy the first of them as a CURLOPT_CONNECT_TO
        entry (the CONNECT names that address, so the proxy cannot resolve the name to
        another); None for an allowed IP literal. Answers are reused: a name's for
        ``DNS_SECONDS``, a literal's for as long as the sender lives."""
        assert self._guard is not None  # else ``_known_pin`` answered
        host, port = host_port
        pinned: str | None = None
        expires = math.inf
        if literal_address(host) is not None:
            self._guard.refuse_literal(host)
        else:
            found = await self._guard.resolve(host, port, socket.AF_UNSPEC)
            addresses = list(dict.fromkeys(_bracketed(r["host"]) for r in found))
            if self._proxy:  # the tunnel goes to the checked address, not to the name
                pinned = f"{host}:{port}:{addresses[0]}:{port}"
            else:  # "+": the entry expires like a lookup
                pinned = f"+{host}:{port}:{','.join(addresses)}"
            expires = time.monotonic() + DNS_SECONDS
        self._dns.put(host_port, (pinned, expires))
        return pinned

    def _finished(self, done: list[tuple[_Job, int, int, str]]) -> None:
        """On the event loop: a batch of finished transfers (status, curl error, message)."""
        for job, status, errno, message in done:
            if job.future.done():
                continue
            try:
                result = self._result(job, status, errno, message)
            except Exception as exc:  # a bug here must not leave this or later jobs waiting
                log.exception("curl_result_failed")
                result = unanswered(job.started, f"{type(exc).__name__}: {exc}", Failure.INTERNAL)
            job.future.set_result(result)

    def _result(self, job: _Job, status: int, errno: int, message: str) -> AttemptResult:
        if job.blocked is not None and not status:
            return unanswered(job.started, f"blocked: {job.blocked}", Failure.BLOCKED)
        if status and (errno == 0 or job.truncated or (errno in _CUT_SHORT and job.received)):
            text = job.received.decode("utf-8", errors="replace")
            wait = _retry_after(job.head.getvalue()) if status in RETRY_AFTER_STATUSES else None
            return answered(job.started, status, text, wait)
        if errno == pycurl.E_OPERATION_TIMEDOUT:
            return unanswered(job.started, f"timeout after {self._timeout:g}s", Failure.TIMEOUT)
        return unanswered(job.started, f"curl error {errno}: {message}", Failure.CONNECTION)


class _Engine:
    """The thread: libcurl's socket interface under one selector, with a pipe that wakes it
    when the event loop hands over work."""

    def __init__(self, owner: CurlSender, max_connections: int, *, replacing: bool) -> None:
        self._owner = owner
        self.replacing = replacing
        """Started by ``CurlSender._engine_died`` to take what a dead engine left queued."""
        self.took_jobs = False
        self._selector = selectors.DefaultSelector()
        self._selector.register(owner._wake_read, selectors.EVENT_READ, None)
        self._multi = pycurl.CurlMulti()
        self._multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        self._multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        self._multi.setopt(pycurl.M_MAXCONNECTS, max_connections)
        self._deadline: float | None = None
        self._running: dict[int, tuple[pycurl.Curl, _Job]] = {}
        self._idle: list[pycurl.Curl] = []
        self._stopping = False
        self.dead = False
        """Set once the thread takes no more jobs (see ``CurlSender._restart_if_dead``)."""

    def run(self) -> None:
        crashed = False
        try:
            self._take_jobs()  # queued before this engine started (after another died)
            while not self._stopping:
                self._step()
        except Exception:
            log.exception("curl_engine_failed")
            crashed = True
        finally:
            self.dead = True
            try:
                self._abandon()
            finally:
                if crashed:
                    self._tell_loop(self._owner._engine_died, self)

    def _abandon(self) -> None:
        """What this engine held fails as a connection error (retried as usual). The queue
        is left alone: what waits there is for the next engine, or for ``close``."""
        unfinished = [job for _, job in self._running.values()]
        for handle, job in self._running.values():
            with contextlib.suppress(Exception):  # one broken handle must not keep the rest
                self._multi.remove_handle(handle)
            with contextlib.suppress(Exception):
                handle.close()
            for made in job.sockets:
                made.close()
        with contextlib.suppress(Exception):
            for handle in self._idle:
                handle.close()
            self._multi.close()
            self._selector.close()
        if unfinished:
            self._tell_loop(self._owner._finished, _stopped(unfinished))

    def _tell_loop(self, callback: Callable[..., None], *args: Any) -> None:
        if not self._owner._loop.is_closed():
            self._owner._loop.call_soon_threadsafe(callback, *args)

    def _step(self) -> None:
        timeout = None
        if self._deadline is not None:
            timeout = max(0.0, self._deadline - time.monotonic())
        for key, mask in self._selector.select(timeout):
            if key.data is None:
                self._take_jobs()
                continue
            action = 0
            if mask & selectors.EVENT_READ:
                action |= pycurl.CSELECT_IN
            if mask & selectors.EVENT_WRITE:
                action |= pycurl.CSELECT_OUT
            self._multi.socket_action(key.fd, action)
        if self._deadline is not None and time.monotonic() >= self._deadline:
            self._deadline = None
            self._multi.socket_action(pycurl.SOCKET_TIMEOUT, 0)
        self._collect()

    def _take_jobs(self) -> None:
        # In this order: a wake after the flag is cleared leaves its byte in the pipe (so
        # the thread comes back), and a job put before it is taken below.
        with contextlib.suppress(BlockingIOError):
            while os.read(self._owner._wake_read, 4096):
                pass
        self._owner._woken = False
        while True:
            try:
                job = self._owner._jobs.get_nowait()
            except queue.Empty:
                return
            if job is None:
                self._stopping = True
                continue
            self.took_jobs = True
            handle: pycurl.Curl | None = None
            try:
                handle = self._idle.pop() if self._idle else self._new_handle()
                self._configure(handle, job)
                self._multi.add_handle(handle)
            except Exception as exc:  # this job's fault (an option libcurl refuses): fail it
                if handle is not None:
                    handle.close()
                failed = [(job, 0, pycurl.E_BAD_FUNCTION_ARGUMENT, f"{type(exc).__name__}: {exc}")]
                self._tell_loop(self._owner._finished, failed)
                continue
            self._running[id(handle)] = (handle, job)

    def _new_handle(self) -> pycurl.Curl:
        """A handle with the options every delivery shares; reused across deliveries."""
        handle = pycurl.Curl()
        timeout_ms = int(self._owner._timeout * 1000)
        handle.setopt(pycurl.POST, 1)
        if self._owner._trusted is not None:  # the system's CAs and TIDINGS_CA_BUNDLE's
            handle.setopt(pycurl.CAINFO_BLOB, self._owner._trusted)
        elif _TRUST.cafile:  # the system's CA bundle (or SSL_CERT_FILE), as aiohttp uses
            handle.setopt(pycurl.CAINFO, _TRUST.cafile)
        if _TRUST.capath:
            handle.setopt(pycurl.CAPATH, _TRUST.capath)
        handle.setopt(pycurl.TIMEOUT_MS, timeout_ms)
        handle.setopt(pycurl.CONNECTTIMEOUT_MS, timeout_ms)
        handle.setopt(pycurl.NOSIGNAL, 1)
        handle.setopt(pycurl.FOLLOWLOCATION, 0)
        handle.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        handle.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        handle.setopt(pycurl.PROXY, self._owner._proxy or "")  # never one from the environment
        if self._owner._proxy:
            handle.setopt(pycurl.HTTPPROXYTUNNEL, 1)  # CONNECT for http:// receivers too
        return handle

    def _configure(self, handle: pycurl.Curl, job: _Job) -> None:
        """What differs per delivery. Header lines go to a BytesIO (no Python call per
        line); the body to ``_write``, which stops the transfer at the cap."""
        handle.setopt(pycurl.URL, job.url)
        handle.setopt(pycurl.POSTFIELDS, job.body)
        handle.setopt(pycurl.HTTPHEADER, job.headers)
        route = [job.pinned] if job.pinned else []
        handle.setopt(pycurl.CONNECT_TO if self._owner._proxy else pycurl.RESOLVE, route)
        handle.setopt(pycurl.WRITEFUNCTION, functools.partial(_write, job))
        handle.setopt(pycurl.HEADERFUNCTION, job.head.write)
        if self._owner._guard is not None and not self._owner._proxy:
            # Through a proxy the one socket libcurl opens is to the proxy, which may well
            # sit on a private address; the target was checked when it was pinned.
            handle.setopt(
                pycurl.OPENSOCKETFUNCTION, lambda purpose, address: self._open(job, address)
            )

    def _open(self, job: _Job, address: Any) -> Any:
        """Last check before libcurl connects: the address is one the guard allows."""
        family, socktype, protocol, sockaddr = address
        guard = self._owner._guard
        assert guard is not None
        reason = guard.refusal(sockaddr[0])
        if reason is not None:
            job.blocked = f"{sockaddr[0]} is {reason}"
            return _BLOCKED_SOCKET
        made = socket.socket(family, socktype, protocol)
        job.sockets.append(made)
        return made

    def _collect(self) -> None:
        done: list[tuple[_Job, int, int, str]] = []
        try:
            while True:
                queued, succeeded, failed = self._multi.info_read()
                for handle in succeeded:
                    done.append(self._release(handle, 0, ""))
                for handle, errno, message in failed:
                    done.append(self._release(handle, errno, message))
                if not queued:
                    break
        finally:  # if a release fails, those before it are answered all the same
            if done:
                self._tell_loop(self._owner._finished, done)

    def _release(self, handle: pycurl.Curl, errno: int, message: str) -> tuple[_Job, int, int, str]:
        """A finished transfer's job and result; the job leaves ``_running`` last, so one
        whose release fails is still failed by ``_abandon``."""
        job = self._running[id(handle)][1]
        for made in job.sockets:
            made.close()
        status = int(handle.getinfo(pycurl.RESPONSE_CODE))
        self._multi.remove_handle(handle)
        for callback in (pycurl.WRITEFUNCTION, pycurl.HEADERFUNCTION, pycurl.OPENSOCKETFUNCTION):
            handle.unsetopt(callback)  # an idle handle keeps no finished job alive
        del self._running[id(handle)]
        self._idle.append(handle)
        return job, status, errno, message

    def _on_socket(self, what: int, fd: int, multi: Any, data: Any) -> None:
        if what == pycurl.POLL_REMOVE:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(fd)
            return
        events = _EVENTS.get(what)
        if events is None:
            return
        try:
            self._selector.modify(fd, events, fd)
        except KeyError:
            self._selector.register(fd, events, fd)

    def _on_timer(self, timeout_ms: int) -> None:
        self._deadline = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000


def _stopped(jobs: list[_Job]) -> list[tuple[_Job, int, int, str]]:
    """``jobs`` as transfers no engine will finish: connection errors, retried as usual."""
    return [(job, 0, pycurl.E_ABORTED_BY_CALLBACK, "sender stopped") for job in jobs]


_TRUST = ssl.get_default_verify_paths()


def _trusted_pem(ca_bundle: str) -> bytes:
    """The system's CA bundle and ``ca_bundle`` (TIDINGS_CA_BUNDLE) in one PEM blob: the
    extra CAs add to the system's rather than replace them."""
    system = b""
    if _TRUST.cafile and os.path.isfile(_TRUST.cafile):
        with open(_TRUST.cafile, "rb") as found:
            system = found.read()
    with open(ca_bundle, "rb") as extra:
        return system + b"\n" + extra.read()


_CUT_SHORT = frozenset({pycurl.E_OPERATION_TIMEDOUT, pycurl.E_PARTIAL_FILE, pycurl.E_RECV_ERROR})
"""Ends after the status and some of the body: the receiver answered (aiohttp's capped read
returns what has come, too), so it counts as its status, not as a failure to retry."""


def _bracketed(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _write(job: _Job, chunk: bytes) -> int | None:
    room = RESPONSE_READ_LIMIT - len(job.received)
    job.received += chunk[:room]
    if len(chunk) > room:
        job.truncated = True
        return 0  # enough: libcurl stops the transfer (and drops the connection)
    return None


def _retry_after(head: bytes) -> str | None:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"retry-after":
            return value.strip().decode("latin-1")
    return None


_EVENTS = {
    pycurl.POLL_IN: selectors.EVENT_READ,
    pycurl.POLL_OUT: selectors.EVENT_WRITE,
    pycurl.POLL_INOUT: selectors.EVENT_READ | selectors.EVENT_WRITE,
}
