"""When to try a failed delivery again."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, bounded by a count and a time window.

    Each delay doubles from ``base_delay`` up to ``max_delay``, then varies by
    ``jitter`` (a fraction, both ways) so retries from one outage do not arrive together.

    ``max_attempts`` counts the first try, so the default 11 means ten retries.
    The window is measured from the event's creation: no retry is scheduled after it.
    """

    base_delay: float = 10.0
    max_attempts: int = 11
    max_window: float = 86_400.0
    jitter: float = 0.2
    max_retry_after: float = 3_600.0
    max_delay: float = 21_600.0

    def backoff(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        delay = min(self.base_delay * 2.0 ** (attempt - 1), self.max_delay)
        spread = 1 + self.jitter * (2 * rand() - 1)
        return delay * spread

    def next_attempt_ms(
        self,
        attempt: int,
        event_created_ms: int,
        now_ms: int,
        retry_after: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> int | None:
        """Epoch ms of the next try after a failed ``attempt``, or None to give up.

        A receiver's ``Retry-After`` (429/503) replaces the backoff, clamped to
        ``[0, max_retry_after]`` so a hostile value cannot park a delivery forever.
        """
        if attempt >= self.max_attempts:
            return None
        if retry_after is not None:
            delay = min(max(retry_after, 0.0), self.max_retry_after)
        else:
            delay = self.backoff(attempt, rand)
        due_ms = now_ms + int(delay * 1000)
        if due_ms > event_created_ms + int(self.max_window * 1000):
            return None
        return due_ms
