"""When to try a failed delivery again."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


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
        delays: Sequence[float] | None = None,
    ) -> int | None:
        """Epoch ms of the next try after a failed ``attempt``, or None to give up.

        ``delays`` (a subscription's own schedule) replace the backoff and the attempt
        limit, varied by ``EXPLICIT_JITTER``. A receiver's ``Retry-After`` (429/503),
        clamped to ``[0, max_retry_after]`` so a hostile value cannot park a delivery
        forever, replaces the backoff, and lengthens (never shortens) an explicit delay.
        The window caps every schedule.
        """
        if delays is not None:
            if attempt > len(delays):
                return None
            planned = delays[attempt - 1] * (1 + EXPLICIT_JITTER * (2 * rand() - 1))
        elif attempt >= self.max_attempts:
            return None
        else:
            planned = self.backoff(attempt, rand)
        if retry_after is None:
            delay = planned
        else:
            asked = min(max(retry_after, 0.0), self.max_retry_after)
            delay = max(asked, planned) if delays is not None else asked
        due_ms = now_ms + int(delay * 1000)
        if due_ms > event_created_ms + int(self.max_window * 1000):
            return None
        return due_ms


EXPLICIT_JITTER = 0.1
"""How far (a fraction, both ways) a subscription's explicit delays vary."""
MAX_RETRIES = 50
MAX_DELAY_SECONDS = 7 * 86_400
MAX_BREAKER_THRESHOLD = 10_000


class RetryOn(StrEnum):
    """The failures a subscription's ``retryOn`` can name."""

    TIMEOUT = "timeout"
    CONNECTION = "connection"
    S408 = "408"
    S429 = "429"
    S5XX = "5xx"
    S4XX = "4xx"
    S3XX = "3xx"


class InvalidRetryPolicy(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class RetryRules:
    """A subscription's own ``retryPolicy``: each part, when set, replaces the instance's.

    ``delays``: seconds before retry 1, 2, ... (so ``len(delays) + 1`` attempts in all);
    ``retry_on``: the failures worth another attempt (others fail the delivery at once);
    ``breaker_threshold``: consecutive failures that disable the subscription.
    """

    delays: tuple[float, ...] | None = None
    retry_on: frozenset[RetryOn] | None = None
    breaker_threshold: int | None = None

    def retries(self, failure: RetryOn) -> bool:
        return self.retry_on is None or failure in self.retry_on

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> RetryRules:
        """From the API's ``{delays, retryOn, breakerThreshold}``; raises InvalidRetryPolicy
        naming the field."""
        unknown = set(raw) - {"delays", "retryOn", "breakerThreshold"}
        if unknown:
            raise InvalidRetryPolicy(f"retryPolicy.{min(unknown)}", "unknown field")
        return cls(
            delays=_delays(raw.get("delays")),
            retry_on=_retry_on(raw.get("retryOn")),
            breaker_threshold=_threshold(raw.get("breakerThreshold")),
        )

    @classmethod
    def stored(cls, raw: Mapping[str, Any]) -> RetryRules:
        """What a store kept: each part that is still valid, the rest left to the instance."""
        parts: dict[str, Any] = {}
        for key, parse in (
            ("delays", _delays),
            ("retryOn", _retry_on),
            ("breakerThreshold", _threshold),
        ):
            try:
                parts[key] = parse(raw.get(key))
            except InvalidRetryPolicy:
                parts[key] = None
        return cls(parts["delays"], parts["retryOn"], parts["breakerThreshold"])

    def to_dict(self) -> dict[str, Any]:
        """The API's shape, and what the stores keep (as JSON)."""
        found: dict[str, Any] = {}
        if self.delays is not None:
            found["delays"] = [int(d) if float(d).is_integer() else d for d in self.delays]
        if self.retry_on is not None:
            found["retryOn"] = [r.value for r in RetryOn if r in self.retry_on]
        if self.breaker_threshold is not None:
            found["breakerThreshold"] = self.breaker_threshold
        return found


def _delays(raw: Any) -> tuple[float, ...] | None:
    if raw is None:
        return None
    field = "retryPolicy.delays"
    if not isinstance(raw, list):
        raise InvalidRetryPolicy(field, "must be a list of seconds")
    if len(raw) > MAX_RETRIES:
        raise InvalidRetryPolicy(field, f"at most {MAX_RETRIES} retries")
    delays = []
    for n, value in enumerate(raw):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidRetryPolicy(f"{field}[{n}]", "must be a number of seconds")
        if not math.isfinite(value) or not 0 <= value <= MAX_DELAY_SECONDS:
            raise InvalidRetryPolicy(f"{field}[{n}]", f"must be 0 to {MAX_DELAY_SECONDS} seconds")
        delays.append(float(value))
    return tuple(delays)


def _retry_on(raw: Any) -> frozenset[RetryOn] | None:
    if raw is None:
        return None
    field = "retryPolicy.retryOn"
    if not isinstance(raw, list):
        raise InvalidRetryPolicy(field, "must be a list")
    found = set()
    for n, value in enumerate(raw):
        try:
            found.add(RetryOn(value))
        except ValueError:
            known = ", ".join(r.value for r in RetryOn)
            raise InvalidRetryPolicy(f"{field}[{n}]", f"must be one of {known}") from None
    return frozenset(found)


def _threshold(raw: Any) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise InvalidRetryPolicy("retryPolicy.breakerThreshold", "must be an integer")
    if not 1 <= raw <= MAX_BREAKER_THRESHOLD:
        raise InvalidRetryPolicy(
            "retryPolicy.breakerThreshold", f"must be 1 to {MAX_BREAKER_THRESHOLD}"
        )
    return raw
