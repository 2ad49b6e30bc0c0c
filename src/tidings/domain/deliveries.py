"""Delivery attempts: what counts as success, and what a result means for the queue."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import StrEnum

from tidings.domain.retry import RetryOn, RetryPolicy, RetryRules

RESPONSE_BODY_LIMIT = 4000
"""Characters of a receiver's response body kept in the attempt log."""


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    PAUSED = "paused"
    """Its subscription is disabled (breaker or by hand): it waits to be resumed."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class DisableReason(StrEnum):
    BREAKER = "breaker"
    GONE = "gone"
    MANUAL = "manual"
    UNVERIFIED = "unverified"
    """Created or moved with endpoint verification, and not yet answered 2xx."""

    @property
    def pauses(self) -> bool:
        """Whether deliveries wait for re-enabling; a 410 Gone (or never verified) drops them."""
        return self in (DisableReason.BREAKER, DisableReason.MANUAL)


class Failure(StrEnum):
    """Why no response came."""

    TIMEOUT = "timeout"
    CONNECTION = "connection"
    """Refused, reset, unreachable, TLS or DNS failure: the receiver could not be reached."""
    BLOCKED = "blocked"
    """The SSRF guard refused the address."""
    INTERNAL = "internal"
    """Our own error before anything was sent."""
    TRANSFORMATION = "transformation"
    """The subscription's transformation threw, ran out of time or of memory: the tenant's
    own script failed, so retrying cannot help and the receiver is not to blame."""
    CANCELLED = "cancelled"
    """The subscription's transformation cancelled the delivery: nothing is sent."""
    UNAVAILABLE = "unavailable"
    """The transformation could not run (its engine is down): our own trouble, as
    ``INTERNAL``, but no bug, and nothing the receiver did."""


@dataclass(frozen=True)
class AttemptResult:
    """What one POST to a receiver produced. ``status_code`` is None when no response came,
    and then ``failure`` says why."""

    status_code: int | None
    elapsed_ms: int
    response_body: str = ""
    error: str | None = None
    retry_after: float | None = None
    failure: Failure | None = None

    @property
    def congested(self) -> bool:
        """The receiver is overwhelmed or unreachable: it should get fewer requests."""
        if self.status_code is not None:
            return self.status_code in (429, 503)
        return self.failure in (Failure.TIMEOUT, Failure.CONNECTION)

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        return self.status_code == 410

    @property
    def reached_for_receiver(self) -> bool:
        """An attempt was made on the receiver (or failed on our side of it); False when
        the subscription's own transformation failed or cancelled it, which the breaker
        must not count against the receiver."""
        return self.failure not in (Failure.TRANSFORMATION, Failure.CANCELLED, Failure.UNAVAILABLE)


@dataclass(frozen=True)
class Verdict:
    """The queue's next state for a delivery after one attempt."""

    status: DeliveryStatus
    next_attempt_ms: int | None
    disable: DisableReason | None = None


def truncate_body(text: str) -> str:
    return text[:RESPONSE_BODY_LIMIT]


def judge_attempt(
    result: AttemptResult,
    attempt: int,
    window_start_ms: int,
    now_ms: int,
    policy: RetryPolicy,
    rules: RetryRules | None = None,
    rand: Callable[[], float] = random.random,
) -> Verdict:
    """2xx delivers; 410 means the receiver unsubscribed; a transformation that cancelled or
    failed ends the delivery (cancelled, failed); anything else is retried (unless
    the subscription's ``rules`` say not for this failure), within the retry window
    counted from ``window_start_ms`` (the event, plus time paused)."""
    if result.succeeded:
        return Verdict(DeliveryStatus.SUCCEEDED, None)
    if result.gone:
        return Verdict(DeliveryStatus.FAILED, None, DisableReason.GONE)
    if result.failure is Failure.CANCELLED:
        return Verdict(DeliveryStatus.CANCELLED, None)
    if result.failure is Failure.TRANSFORMATION:
        return Verdict(DeliveryStatus.FAILED, None)
    ours = result.failure in (Failure.INTERNAL, Failure.UNAVAILABLE)  # always tried again
    if rules is not None and not ours and not rules.retries(failure_class(result)):
        return Verdict(DeliveryStatus.FAILED, None)
    delays = rules.delays if rules is not None else None
    due_ms = policy.next_attempt_ms(
        attempt, window_start_ms, now_ms, result.retry_after, rand, delays
    )
    if due_ms is None:
        return Verdict(DeliveryStatus.FAILED, None)
    return Verdict(DeliveryStatus.PENDING, due_ms)


def failure_class(result: AttemptResult) -> RetryOn:
    """What ``retryOn`` calls this failure. A refused address or our own error counts as
    ``connection``: nothing reached the receiver."""
    code = result.status_code
    if code is None:
        return RetryOn.TIMEOUT if result.failure is Failure.TIMEOUT else RetryOn.CONNECTION
    if code in (408, 429):
        return RetryOn(str(code))
    if 300 <= code < 400:
        return RetryOn.S3XX
    if 400 <= code < 500:
        return RetryOn.S4XX
    return RetryOn.S5XX


def breaker_tripped(consecutive_failures: int, threshold: int) -> bool:
    return threshold > 0 and consecutive_failures >= threshold


def parse_retry_after(value: str | None, now_ms: int) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date); None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdecimal():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - now_ms / 1000)
