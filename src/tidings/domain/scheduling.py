"""How one worker shares its in-flight slots among tenants and subscriptions. Pure: no I/O.

Two rules, applied each time the worker claims work:

* **Fair shares.** Free slots go to whoever holds the fewest now: tenants first, then the
  subscriptions of each tenant (max-min fairness, "water filling"). A tenant with one due
  delivery and nothing in flight is served before a tenant already holding hundreds,
  whatever the due times say.
* **Adaptive limits.** Each subscription may hold at most its ``AdaptiveLimit`` of slots:
  it grows while the receiver answers (quickly doubling at first, then by one per
  round trip) and halves when it times out, refuses connections or answers 429/503.
  Subscriptions that failed that way recently ("troubled") share at most a fraction of
  the worker, so a crowd of hanging endpoints cannot fill it.

The queue (``storage``) reports which subscriptions have due work (``Lane``) and what
cluster-wide room they have (``maxConcurrency``, ``rateLimit``); ``Scheduler.plan`` turns
that into how many deliveries to claim from each.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TypeVar

K = TypeVar("K", bound=Hashable)

INITIAL_LIMIT = 8
"""Attempts a subscription may have in flight before its receiver has answered any."""

TROUBLED_SHARE = 0.5
"""Fraction of a worker's slots that troubled subscriptions may hold together."""

TROUBLE_SECONDS = 30.0
"""How long a timeout or refused connection marks a subscription as troubled."""

LATENCY_TOLERANCE = 2.0
"""A success slower than this multiple of the receiver's usual latency does not grow
the limit: the receiver is queueing our requests, more of them would only wait longer."""

LATENCY_SLACK_MS = 50.0


@dataclass(frozen=True)
class Lane:
    """A subscription that has deliveries due now, as the queue reports it."""

    subscription_id: str
    tenant_id: str
    room: int | None = None
    """Deliveries the cluster-wide limits allow to start now (None: no such limit)."""


class Signal(Enum):
    """What an attempt says about the receiver's capacity."""

    ANSWERED = "answered"
    """A response came: success or an ordinary HTTP error; the receiver keeps up."""
    CONGESTED = "congested"
    """Timeout, refused or reset connection, 429 or 503: ask less of this receiver."""
    NEUTRAL = "neutral"
    """Nothing learned (e.g. our own error before sending)."""


@dataclass
class AdaptiveLimit:
    """AIMD with a slow start, per subscription; ``value`` is the slots it may hold."""

    ceiling: int
    limit: float = INITIAL_LIMIT
    threshold: float = float("inf")
    """Below it the limit doubles per round trip (slow start); above, it grows by one."""
    last_decrease: float = float("-inf")
    troubled_until: float = float("-inf")
    usual_latency_ms: float | None = None

    def __post_init__(self) -> None:
        self.limit = min(self.limit, self.ceiling)

    @property
    def value(self) -> int:
        return max(1, int(self.limit))

    def troubled(self, now: float) -> bool:
        return now < self.troubled_until

    def answered(self, latency_ms: float) -> None:
        usual = self.usual_latency_ms
        if usual is None or latency_ms < usual:
            self.usual_latency_ms = latency_ms
        else:  # drift up slowly, so a receiver that became slower for good is relearned
            self.usual_latency_ms = usual + (latency_ms - usual) * 0.01
        if usual is not None and latency_ms > usual * LATENCY_TOLERANCE + LATENCY_SLACK_MS:
            return
        step = 1.0 if self.limit < self.threshold else 1.0 / self.limit
        self.limit = min(float(self.ceiling), self.limit + step)

    def congested(self, started: float, now: float) -> None:
        """Halve, once per round trip: attempts that started before the last decrease
        were sent at the old limit and say nothing new about the lower one."""
        self.troubled_until = now + TROUBLE_SECONDS
        if started < self.last_decrease:
            return
        self.limit = max(1.0, self.limit / 2)
        self.threshold = self.limit
        self.last_decrease = now


def fair_shares(
    demand: Mapping[K, int], held: Mapping[K, int], capacity: int, order: Sequence[K] = ()
) -> dict[K, int]:
    """Max-min fair split of ``capacity`` slots: each goes to whoever with unmet
    ``demand`` holds the fewest (``held`` plus what this split gave); ties by ``order``."""
    rank = {key: i for i, key in enumerate(order)}
    heap = [
        (held.get(key, 0), rank.get(key, len(rank)), i, key)
        for i, (key, wanted) in enumerate(demand.items())
        if wanted > 0
    ]
    heapq.heapify(heap)
    given: dict[K, int] = {}
    while capacity > 0 and heap:
        level, position, tiebreak, key = heapq.heappop(heap)
        given[key] = given.get(key, 0) + 1
        capacity -= 1
        if given[key] < demand[key]:
            heapq.heappush(heap, (level + 1, position, tiebreak, key))
    return given


@dataclass
class Scheduler:
    """One worker's view: what it holds, per subscription and tenant, and the limits."""

    capacity: int
    ceiling: int
    """Most slots one subscription may hold in a worker (``TIDINGS_SUBSCRIPTION_CONCURRENCY``)."""
    troubled_share: float = TROUBLED_SHARE
    held: dict[str, int] = field(default_factory=dict)
    tenant_held: dict[str, int] = field(default_factory=dict)
    limits: dict[str, AdaptiveLimit] = field(default_factory=dict)
    ceilings: dict[str, int] = field(default_factory=dict)
    """Per-subscription ceilings below the worker's (a ``maxConcurrency``)."""

    @property
    def in_flight(self) -> int:
        return sum(self.held.values())

    def limit(self, sub_id: str) -> AdaptiveLimit:
        found = self.limits.get(sub_id)
        if found is None:
            found = self.limits[sub_id] = AdaptiveLimit(self.ceilings.get(sub_id, self.ceiling))
        return found

    def set_ceiling(self, sub_id: str, max_concurrency: int | None) -> None:
        ceiling = min(max_concurrency or self.ceiling, self.ceiling)
        if self.ceilings.get(sub_id, self.ceiling) != ceiling:
            self.ceilings[sub_id] = ceiling
            limit = self.limit(sub_id)
            limit.ceiling = ceiling
            limit.limit = min(limit.limit, ceiling)

    def room(self, sub_id: str) -> int:
        limit = self.limits.get(sub_id)
        value = limit.value if limit is not None else min(INITIAL_LIMIT, self.ceiling)
        return max(0, value - self.held.get(sub_id, 0))

    def saturated(self) -> list[str]:
        """Subscriptions this worker can take no more of now (the queue skips them)."""
        return [sub_id for sub_id in self.held if self.room(sub_id) == 0]

    def plan(self, lanes: Sequence[Lane], free: int, now: float) -> dict[str, int]:
        """How many deliveries to claim from each lane with ``free`` slots to fill."""
        demand: dict[str, int] = {}
        for lane in lanes:
            wanted = self.room(lane.subscription_id)
            if lane.room is not None:
                wanted = min(wanted, lane.room)
            demand[lane.subscription_id] = wanted
        self._limit_troubled(demand, now)
        tenant_of = {lane.subscription_id: lane.tenant_id for lane in lanes}
        tenant_demand: dict[str, int] = {}
        for sub_id, wanted in demand.items():
            tenant = tenant_of[sub_id]
            tenant_demand[tenant] = tenant_demand.get(tenant, 0) + wanted
        tenant_order = list(dict.fromkeys(lane.tenant_id for lane in lanes))
        tenants = fair_shares(tenant_demand, self.tenant_held, free, tenant_order)
        plan: dict[str, int] = {}
        for tenant, share in tenants.items():
            mine = {s: n for s, n in demand.items() if tenant_of[s] == tenant}
            order = [lane.subscription_id for lane in lanes if lane.tenant_id == tenant]
            plan.update(fair_shares(mine, self.held, share, order))
        return plan

    def _limit_troubled(self, demand: dict[str, int], now: float) -> None:
        troubled = [s for s in demand if s in self.limits and self.limits[s].troubled(now)]
        if not troubled:
            return
        budget = int(self.capacity * self.troubled_share)
        used = sum(self.held.get(s, 0) for s, lim in self.limits.items() if lim.troubled(now))
        shares = fair_shares({s: demand[s] for s in troubled}, self.held, max(0, budget - used))
        for sub_id in troubled:
            demand[sub_id] = shares.get(sub_id, 0)

    def started(self, sub_id: str, tenant_id: str) -> None:
        self.held[sub_id] = self.held.get(sub_id, 0) + 1
        self.tenant_held[tenant_id] = self.tenant_held.get(tenant_id, 0) + 1

    def finished(
        self,
        sub_id: str,
        tenant_id: str,
        signal: Signal,
        latency_ms: float,
        started: float,
        now: float,
    ) -> None:
        _decrement(self.held, sub_id)
        _decrement(self.tenant_held, tenant_id)
        if signal is Signal.ANSWERED:
            self.limit(sub_id).answered(latency_ms)
        elif signal is Signal.CONGESTED:
            self.limit(sub_id).congested(started, now)

    def share(self, sub_id: str) -> float:
        """The fraction of this worker's slots the subscription holds now."""
        return self.held.get(sub_id, 0) / self.capacity if self.capacity else 0.0


def _decrement(counts: dict[str, int], key: str) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)
