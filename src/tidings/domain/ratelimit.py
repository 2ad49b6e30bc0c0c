"""Per-subscription pacing: a token bucket and an in-flight cap, both pure."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    """``rate`` deliveries per second with bursts of up to ``burst`` (default: one second's)."""

    rate: float
    burst: float = 0.0
    tokens: float = field(init=False)
    updated: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.burst = self.burst or max(1.0, self.rate)
        self.tokens = self.burst

    def _refill(self, now: float) -> None:
        if self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def take(self, now: float) -> bool:
        self._refill(now)
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def wait_seconds(self, now: float) -> float:
        """How long until one token is available."""
        self._refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate


@dataclass
class Pacer:
    """Decides, per subscription, whether one more delivery may start now.

    Limits are enforced per dispatcher process: with W workers a subscription sees at
    most W x ``max_concurrency`` requests in flight and W x ``rate`` per second.
    """

    default_concurrency: int
    active: dict[str, int] = field(default_factory=dict)
    buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def try_start(
        self, sub_id: str, max_concurrency: int | None, rate: float | None, now: float
    ) -> float | None:
        """None if the delivery may start (and is counted); else seconds to wait first."""
        limit = max_concurrency or self.default_concurrency
        if self.active.get(sub_id, 0) >= limit:
            return 0.05
        if rate:
            bucket = self.buckets.get(sub_id)
            if bucket is None or bucket.rate != rate:
                bucket = self.buckets[sub_id] = TokenBucket(rate)
            if not bucket.take(now):
                return bucket.wait_seconds(now)
        self.active[sub_id] = self.active.get(sub_id, 0) + 1
        return None

    def finish(self, sub_id: str) -> None:
        remaining = self.active.get(sub_id, 0) - 1
        if remaining > 0:
            self.active[sub_id] = remaining
        else:
            self.active.pop(sub_id, None)
