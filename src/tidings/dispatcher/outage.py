"""Riding out a dependency's outage: log it once, retry with a capped backoff, say when
it is over. Long-running loops use one per thing they depend on."""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

log = structlog.get_logger("tidings.outage")

FIRST_DELAY = 0.05
MAX_DELAY = 2.0
"""Retries during an outage are at most this far apart, so work resumes within about
this long of the dependency's return."""


class Outage:
    def __init__(self, what: str, first: float = FIRST_DELAY, cap: float = MAX_DELAY) -> None:
        self.what = what
        self._first = first
        self._cap = cap
        self._delay = first
        self.since: float | None = None
        self.failures = 0

    @property
    def ongoing(self) -> bool:
        return self.since is not None

    def noted(self, exc: BaseException) -> None:
        """A failure: logged when it starts an outage, counted otherwise."""
        self.failures += 1
        if self.since is None:
            self.since = time.monotonic()
            log.warning(
                "dependency_unavailable",
                what=self.what,
                error=f"{type(exc).__name__}: {exc}"[:300],
            )

    async def failed(self, exc: BaseException, stop: asyncio.Event | None = None) -> None:
        """Note the failure, then wait before the caller retries (less if ``stop`` is set)."""
        self.noted(exc)
        delay, self._delay = self._delay, min(self._cap, self._delay * 2)
        if stop is None:
            await asyncio.sleep(delay)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)

    def succeeded(self) -> None:
        if self.since is not None:
            log.info(
                "dependency_back",
                what=self.what,
                seconds=round(time.monotonic() - self.since, 1),
                failures=self.failures,
            )
        self.since = None
        self.failures = 0
        self._delay = self._first
