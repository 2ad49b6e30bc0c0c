"""Prometheus metrics: what an operator watches (events, outcomes, latency, queue, breaker).

Counters and the latency histogram live in this process; queue depth and the age of the
oldest due delivery are read from the database when /metrics is scraped, so they are
the same whichever process answers.
"""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from tidings.storage import DeliveryQueue


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events_emitted = Counter(
            "tidings_events_emitted", "Events stored.", ["type"], registry=self.registry
        )
        self.deliveries = Counter(
            "tidings_delivery_attempts",
            "Delivery attempts by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.attempt_seconds = Histogram(
            "tidings_attempt_duration_seconds",
            "Time from POST to answer.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.breaker_trips = Counter(
            "tidings_subscriptions_disabled",
            "Subscriptions disabled, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "tidings_queue_depth", "Deliveries pending.", registry=self.registry
        )
        self.oldest_due_age = Gauge(
            "tidings_oldest_due_age_seconds",
            "Age of the oldest due delivery.",
            registry=self.registry,
        )

    async def render(self, queue: DeliveryQueue) -> tuple[bytes, str]:
        pending, oldest_due_ms = await queue.queue_state(int(time.time() * 1000))
        self.queue_depth.set(pending)
        age = 0.0 if oldest_due_ms is None else max(0.0, time.time() - oldest_due_ms / 1000)
        self.oldest_due_age.set(age)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
