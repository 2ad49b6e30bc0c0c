"""Per-subscription pacing."""

from __future__ import annotations

from tidings.domain.ratelimit import Pacer, TokenBucket


def test_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=2)
    assert bucket.take(100.0) and bucket.take(100.0)
    assert not bucket.take(100.0)
    assert bucket.wait_seconds(100.0) == 0.5
    assert bucket.take(100.5)
    assert not bucket.take(100.5)


def test_pacer_caps_in_flight_per_subscription() -> None:
    pacer = Pacer(default_concurrency=2)
    assert pacer.try_start("a", None, None, 0) is None
    assert pacer.try_start("a", None, None, 0) is None
    assert pacer.try_start("a", None, None, 0) is not None
    assert pacer.try_start("b", None, None, 0) is None, "one busy subscription blocks no other"
    pacer.finish("a")
    assert pacer.try_start("a", None, None, 0) is None


def test_pacer_uses_the_subscription_limit() -> None:
    pacer = Pacer(default_concurrency=10)
    assert pacer.try_start("a", 1, None, 0) is None
    assert pacer.try_start("a", 1, None, 0) is not None


def test_pacer_rate_limit_returns_the_wait() -> None:
    pacer = Pacer(default_concurrency=10)
    assert pacer.try_start("a", None, 1.0, 50.0) is None
    wait = pacer.try_start("a", None, 1.0, 50.0)
    assert wait is not None and 0.99 <= wait <= 1.0


def test_pick_claims_respects_room_per_subscription_and_limit() -> None:
    from tidings.storage.sql.queue import pick_claims

    rows = [(1, "a"), (2, "a"), (3, "b"), (4, "a"), (5, "c"), (6, "b")]
    room = {"a": 2, "b": 1, "c": 0}
    assert pick_claims(rows, lambda s: room[s], limit=10) == [1, 2, 3]
    assert pick_claims(rows, lambda s: 5, limit=4) == [1, 2, 3, 4]
