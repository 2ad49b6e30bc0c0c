"""Stand-ins for what a worker talks to, on the event loop's clock (fake under looptime)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from tidings.domain.deliveries import AttemptResult, Failure

EPOCH_MS = int(time.time() * 1000)
"""Wall-clock time when the loop's clock reads 0 (events carry real creation times)."""


class LoopClock:
    """A ``Clock`` on the running event loop's time: virtual in tests marked ``looptime``."""

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    def now_ms(self) -> int:
        return EPOCH_MS + int(self.monotonic() * 1000)


@dataclass
class Route:
    """How the fake receiver at one URL answers."""

    latency: float = 0.005
    status: int | Callable[[int], int] = 200
    """A status, or a function of the request's number at this URL (1, 2, ...)."""
    hang: bool = False


@dataclass
class Received:
    url: str
    event: dict[str, object]
    at: float
    """Loop time the request reached the receiver."""


@dataclass
class FakeSender:
    """A ``Sender`` whose receivers answer per ``routes``, in loop time."""

    timeout: float = 10.0
    routes: dict[str, Route] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    in_flight: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> AttemptResult:
        loop = asyncio.get_running_loop()
        started = loop.time()
        route = self.routes.get(url, Route())
        self.counts[url] = number = self.counts.get(url, 0) + 1
        self.in_flight[url] = self.in_flight.get(url, 0) + 1
        self.peak[url] = max(self.peak.get(url, 0), self.in_flight[url])
        self.received.append(Received(url, json.loads(body), started))
        try:
            if route.hang:
                await asyncio.sleep(self.timeout)
                elapsed = int(self.timeout * 1000)
                return AttemptResult(None, elapsed, error="timeout", failure=Failure.TIMEOUT)
            await asyncio.sleep(route.latency)
            status = route.status(number) if callable(route.status) else route.status
            elapsed = int((loop.time() - started) * 1000)
            error = None if 200 <= status < 300 else f"HTTP {status}"
            return AttemptResult(status, elapsed, error=error)
        finally:
            self.in_flight[url] -= 1

    def at(self, url: str) -> list[Received]:
        return [r for r in self.received if r.url == url]

    async def close(self) -> None:
        return None
