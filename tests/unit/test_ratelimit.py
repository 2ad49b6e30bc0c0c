"""The API's per-key token bucket."""

from __future__ import annotations

from tidings.domain.ratelimit import TokenBucket


def test_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=2)
    assert bucket.take(100.0) and bucket.take(100.0)
    assert not bucket.take(100.0)
    assert bucket.wait_seconds(100.0) == 0.5
    assert bucket.take(100.5)
    assert not bucket.take(100.5)
