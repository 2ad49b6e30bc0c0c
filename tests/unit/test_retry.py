"""Retry schedule and the verdict on each attempt."""

from __future__ import annotations

import pytest

from tidings.domain.deliveries import (
    AttemptResult,
    DeliveryStatus,
    DisableReason,
    Failure,
    breaker_tripped,
    failure_class,
    judge_attempt,
    parse_retry_after,
)
from tidings.domain.retry import InvalidRetryPolicy, RetryOn, RetryPolicy, RetryRules

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


WORKESTRA = RetryRules(delays=(5, 30, 120, 600), breaker_threshold=5)


@pytest.mark.parametrize("jitter", [0.0, 0.5, 1.0])
def test_explicit_delays_are_the_schedule_within_ten_percent(jitter: float) -> None:
    """Workestra: at once, then 5 s, 30 s, 2 min, 10 min; five attempts in all."""
    now = T0
    schedule = []
    for attempt in range(1, 6):
        verdict = judge_attempt(
            AttemptResult(503, 5), attempt, T0, now, POLICY, WORKESTRA, rand=lambda: jitter
        )
        if verdict.next_attempt_ms is None:
            assert verdict.status is DeliveryStatus.FAILED and attempt == 5
            break
        schedule.append((verdict.next_attempt_ms - now) / 1000)
        now = verdict.next_attempt_ms
    spread = 1 + 0.1 * (2 * jitter - 1)
    assert schedule == pytest.approx([d * spread for d in (5, 30, 120, 600)])


def test_the_retry_window_still_caps_explicit_delays() -> None:
    window = RetryPolicy(max_window=60)
    rules = RetryRules(delays=(30, 30, 30))
    first = judge_attempt(AttemptResult(500, 1), 1, T0, T0, window, rules, rand=lambda: 0.5)
    assert first.next_attempt_ms == T0 + 30_000
    late = T0 + 31_000
    second = judge_attempt(AttemptResult(500, 1), 2, T0, late, window, rules, rand=lambda: 0.5)
    assert second.status is DeliveryStatus.FAILED, "a third try would fall past the window"


@pytest.mark.parametrize(
    ("result", "kind"),
    [
        (AttemptResult(None, 1, failure=Failure.TIMEOUT), RetryOn.TIMEOUT),
        (AttemptResult(None, 1, failure=Failure.CONNECTION), RetryOn.CONNECTION),
        (AttemptResult(None, 1, failure=Failure.BLOCKED), RetryOn.CONNECTION),
        (AttemptResult(301, 1), RetryOn.S3XX),
        (AttemptResult(400, 1), RetryOn.S4XX),
        (AttemptResult(408, 1), RetryOn.S408),
        (AttemptResult(429, 1), RetryOn.S429),
        (AttemptResult(500, 1), RetryOn.S5XX),
        (AttemptResult(599, 1), RetryOn.S5XX),
    ],
)
def test_failure_classes_are_what_retry_on_names(result: AttemptResult, kind: RetryOn) -> None:
    assert failure_class(result) is kind
    only_this = RetryRules(retry_on=frozenset({kind}))
    others = RetryRules(retry_on=frozenset(RetryOn) - {kind})
    assert judge_attempt(result, 1, T0, T0, POLICY, only_this).status is DeliveryStatus.PENDING
    assert judge_attempt(result, 1, T0, T0, POLICY, others).status is DeliveryStatus.FAILED


def test_a_gone_receiver_disables_whatever_the_policy() -> None:
    rules = RetryRules(retry_on=frozenset(RetryOn))
    verdict = judge_attempt(AttemptResult(410, 1), 1, T0, T0, POLICY, rules)
    assert verdict.disable is DisableReason.GONE


def test_retry_rules_round_trip_through_their_api_shape() -> None:
    raw = {"delays": [5, 0.5], "retryOn": ["5xx", "timeout"], "breakerThreshold": 5}
    rules = RetryRules.parse(raw)
    assert rules.to_dict() == {
        "delays": [5, 0.5],
        "retryOn": ["timeout", "5xx"],
        "breakerThreshold": 5,
    }
    assert RetryRules.parse(rules.to_dict()) == rules
    assert RetryRules.parse({}).to_dict() == {}


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"delays": "5,30"}, "retryPolicy.delays"),
        ({"delays": [True]}, "retryPolicy.delays[0]"),
        ({"delays": [float("nan")]}, "retryPolicy.delays[0]"),
        ({"delays": [0] * 51}, "retryPolicy.delays"),
        ({"retryOn": ["4xx", "2xx"]}, "retryPolicy.retryOn[1]"),
        ({"breakerThreshold": 1.5}, "retryPolicy.breakerThreshold"),
        ({"breakerThreshold": 10_001}, "retryPolicy.breakerThreshold"),
        ({"jitter": 0.3}, "retryPolicy.jitter"),
    ],
)
def test_bad_retry_rules_name_their_field(raw: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRetryPolicy) as caught:
        RetryRules.parse(raw)
    assert caught.value.field == field
