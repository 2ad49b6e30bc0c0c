"""Retry schedule and the verdict on each attempt."""

from __future__ import annotations

import pytest

from tidings.domain.deliveries import (
    AttemptResult,
    DeliveryStatus,
    DisableReason,
    breaker_tripped,
    judge_attempt,
    parse_retry_after,
)
from tidings.domain.retry import RetryPolicy

POLICY = RetryPolicy(base_delay=10, max_attempts=11, max_window=86_400, jitter=0.2)
T0 = 1_700_000_000_000


def test_backoff_doubles_within_jitter() -> None:
    for attempt in range(1, 11):
        expected = 10 * 2 ** (attempt - 1)
        assert POLICY.backoff(attempt, rand=lambda: 0.5) == pytest.approx(expected)
        assert POLICY.backoff(attempt, rand=lambda: 0.0) == pytest.approx(expected * 0.8)
        assert POLICY.backoff(attempt, rand=lambda: 1.0) == pytest.approx(expected * 1.2)


def test_backoff_is_capped() -> None:
    capped = RetryPolicy(base_delay=10, max_delay=60, jitter=0)
    assert capped.backoff(10) == 60


def test_ten_retries_then_give_up() -> None:
    now = T0
    schedule = []
    for attempt in range(1, 12):
        due = POLICY.next_attempt_ms(attempt, T0, now, rand=lambda: 0.5)
        if due is None:
            break
        schedule.append(due - now)
        now = due
    assert len(schedule) == 10
    assert schedule[0] == 10_000 and schedule[-1] == 5_120_000


def test_window_bounds_retries() -> None:
    short = RetryPolicy(base_delay=10, max_attempts=11, max_window=60)
    assert short.next_attempt_ms(1, T0, T0) is not None
    assert short.next_attempt_ms(3, T0, T0 + 30_000, rand=lambda: 0.5) is None


def test_retry_after_replaces_backoff_within_bounds() -> None:
    assert POLICY.next_attempt_ms(1, T0, T0, retry_after=120) == T0 + 120_000
    assert POLICY.next_attempt_ms(1, T0, T0, retry_after=10**9) == T0 + 3_600_000
    assert POLICY.next_attempt_ms(11, T0, T0, retry_after=1) is None


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, DeliveryStatus.SUCCEEDED),
        (204, DeliveryStatus.SUCCEEDED),
        (301, DeliveryStatus.PENDING),
        (400, DeliveryStatus.PENDING),
        (500, DeliveryStatus.PENDING),
        (None, DeliveryStatus.PENDING),
        (410, DeliveryStatus.FAILED),
    ],
)
def test_verdicts(status: int | None, expected: DeliveryStatus) -> None:
    verdict = judge_attempt(AttemptResult(status, 5), 1, T0, T0, POLICY)
    assert verdict.status is expected
    assert (verdict.disable is DisableReason.GONE) is (status == 410)
    assert (verdict.next_attempt_ms is not None) is (expected is DeliveryStatus.PENDING)


def test_last_attempt_fails_for_good() -> None:
    verdict = judge_attempt(AttemptResult(500, 5), 11, T0, T0, POLICY)
    assert verdict.status is DeliveryStatus.FAILED and verdict.next_attempt_ms is None


def test_breaker() -> None:
    assert not breaker_tripped(19, 20)
    assert breaker_tripped(20, 20)
    assert not breaker_tripped(1000, 0), "a threshold of 0 turns the breaker off"


def test_parse_retry_after() -> None:
    assert parse_retry_after("120", T0) == 120
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1_445_412_420_000) == 60
    assert parse_retry_after("soon", T0) is None
    assert parse_retry_after(None, T0) is None
