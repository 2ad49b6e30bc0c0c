"""One HTTP POST per attempt, never following redirects, never reading a huge body."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp

from tidings import __version__
from tidings.dispatcher.guard import BlockedAddress, GuardedResolver
from tidings.domain.clock import now_ms
from tidings.domain.deliveries import AttemptResult, Failure, parse_retry_after, truncate_body

RESPONSE_READ_LIMIT = 16 * 1024
"""Bytes read from a receiver's response; the log keeps 4000 characters of them."""

RETRY_AFTER_STATUSES = frozenset({429, 503})
USER_AGENT = f"tidings/{__version__}"


class Sender(Protocol):
    """What the dispatcher needs of an HTTP client: the one extension point for trying
    another client (and for tests, which pass a fake)."""

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> AttemptResult:
        """POST ``body``; never raises for anything the receiver or network does."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class SenderOptions:
    """What a sender is made with, whichever the engine (``TIDINGS_SENDER``)."""

    timeout: float
    """Seconds an attempt may take, name resolution included."""
    max_connections: int = 200
    guard: GuardedResolver | None = None
    """Checks every address connected to against the SSRF rules (None: no check)."""
    proxy: str | None = None
    """An egress proxy to tunnel through (the curl sender only)."""
    ca_bundle: str | None = None
    """Certificates trusted besides the system's."""


SenderFactory = Callable[[SenderOptions], Sender]
"""A sender's class: :class:`AiohttpSender` or ``curl_sender.CurlSender``."""


class AiohttpSender:
    """Owns the connection pool; create it inside the event loop that uses it.

    With a ``guard``, every address it connects to passes the SSRF rules: names through
    the guard as aiohttp's resolver, IP literals (which aiohttp never resolves) here.
    """

    def __init__(self, options: SenderOptions) -> None:
        if options.proxy:
            raise ValueError(
                "the aiohttp sender cannot keep the SSRF guard's address through a proxy: "
                "use the curl sender"
            )
        self._guard = options.guard
        self._timeout = aiohttp.ClientTimeout(total=options.timeout)
        tls: ssl.SSLContext | bool = True
        if options.ca_bundle:  # added to the system's CAs, not instead of them
            tls = ssl.create_default_context()
            tls.load_verify_locations(cafile=options.ca_bundle)
        connector = aiohttp.TCPConnector(
            limit=options.max_connections, ttl_dns_cache=60, resolver=options.guard, ssl=tls
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            auto_decompress=False,
            headers={"User-Agent": USER_AGENT},
        )

    async def close(self) -> None:
        await self._session.close()

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> AttemptResult:
        started = time.perf_counter()
        try:
            if self._guard is not None:
                self._guard.refuse_literal(urlsplit(url).hostname or "")
            async with self._session.post(
                url,
                data=body,
                headers={**headers, "Content-Type": "application/json"},
                allow_redirects=False,
            ) as response:
                raw = await response.content.read(RESPONSE_READ_LIMIT)
                return answered(
                    started,
                    response.status,
                    raw.decode("utf-8", errors="replace"),
                    response.headers.get("Retry-After"),
                )
        except TimeoutError:
            error, failure = f"timeout after {self._timeout.total:g}s", Failure.TIMEOUT
        except BlockedAddress as exc:
            error, failure = f"blocked: {exc}", Failure.BLOCKED
        except aiohttp.ClientConnectorError as exc:
            blocked = exc.os_error if isinstance(exc.os_error, BlockedAddress) else None
            if blocked:
                error, failure = f"blocked: {blocked}", Failure.BLOCKED
            else:
                error, failure = f"{type(exc).__name__}: {exc}", Failure.CONNECTION
        except aiohttp.ClientError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            failure = Failure.CONNECTION
        except (OSError, ValueError) as exc:
            error, failure = f"{type(exc).__name__}: {exc}", Failure.CONNECTION
        return unanswered(started, error, failure)


def answered(started: float, status: int, body: str, retry_after: str | None) -> AttemptResult:
    """What every sender records when the receiver answered, whatever the status:
    ``started`` is the ``time.perf_counter()`` of the attempt, ``retry_after`` the header."""
    error = None
    if not 200 <= status < 300:
        error = f"redirect ({status}) not followed" if 300 <= status < 400 else f"HTTP {status}"
    return AttemptResult(
        status_code=status,
        elapsed_ms=_elapsed_ms(started),
        response_body=truncate_body(body),
        error=error,
        retry_after=(
            parse_retry_after(retry_after, now_ms()) if status in RETRY_AFTER_STATUSES else None
        ),
    )


def unanswered(started: float, error: str, failure: Failure) -> AttemptResult:
    """What every sender records when no answer came."""
    return AttemptResult(
        status_code=None, elapsed_ms=_elapsed_ms(started), error=error, failure=failure
    )


def _elapsed_ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
