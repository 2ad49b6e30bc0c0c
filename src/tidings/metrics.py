"""Prometheus metrics: what an operator watches (events, outcomes, latency, queue, breaker).

Counters and the latency histogram live in this process; queue depth and the age of the
oldest due delivery, the per-subscription figures and the partitions' headroom are read
from the database when /metrics is scraped, so they are the same whichever process
answers.
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

from tidings.domain.clock import now_ms
from tidings.storage import Store

TOP_SUBSCRIPTIONS = 20
"""Subscriptions with the largest backlogs get their own series: enough to see who is
slow and who waits, few enough to keep the label cardinality bounded."""


LANE_GAUGES = {
    "backlog": (
        "tidings_subscription_backlog",
        f"Deliveries pending, for the {TOP_SUBSCRIPTIONS} largest backlogs.",
    ),
    "paused": (
        "tidings_subscription_paused",
        "Deliveries waiting for their disabled subscription to be enabled.",
    ),
    "in_flight": (
        "tidings_subscription_in_flight",
        "Attempts in flight now, over every worker.",
    ),
    "slot_limit": (
        "tidings_subscription_slot_limit",
        "The scheduler's adaptive limit, summed over workers.",
    ),
    "share": (
        "tidings_subscription_slot_share",
        "Fraction of the workers' slots the subscription holds.",
    ),
}
"""Per-subscription gauges, by the ``LaneFigures`` field they show: name, help."""


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
        self.partition_headroom = Gauge(
            "tidings_partition_headroom_keys",
            "Keys the table's sequence hands out before rows land in its DEFAULT partition "
            "(PostgreSQL). Upkeep keeps two ranges ahead: below one, it is failing.",
            ["table"],
            registry=self.registry,
        )
        self.lanes = {
            figure: Gauge(name, doc, ["subscription_id", "tenant_id"], registry=self.registry)
            for figure, (name, doc) in LANE_GAUGES.items()
        }

    async def render(self, store: Store) -> tuple[bytes, str]:
        """Figures read from the database at scrape time: the same whichever process
        answers, workers included (they report their lanes through the database)."""
        pending, oldest_due_ms = await store.queue.queue_state(now_ms())
        self.queue_depth.set(pending)
        age = 0.0 if oldest_due_ms is None else max(0.0, time.time() - oldest_due_ms / 1000)
        self.oldest_due_age.set(age)
        for table, keys in (await store.retention.partition_headroom()).items():
            self.partition_headroom.labels(table).set(keys)
        figures = await store.reports.lane_figures(None, None, TOP_SUBSCRIPTIONS)
        for gauge in self.lanes.values():
            gauge.clear()
        for f in figures:
            for name, gauge in self.lanes.items():
                gauge.labels(f.subscription_id, f.tenant_id).set(getattr(f, name))
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
