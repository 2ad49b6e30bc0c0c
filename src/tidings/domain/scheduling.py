"""How one worker shares its in-flight slots among tenants and subscriptions. Pure: no I/O.

Two rules, applied each time the worker claims work:

* **Fair shares.** Free slots go to whoever holds the fewest now: tenants first, then the
  subscriptions of each tenant (max-min fairness, "water filling"). A tenant with one due
  delivery and nothing in flight is served before a tenant already holding hundreds,
  whatever the due times say.
* **Adaptive limits.** Each subscription may hold at most its ``AdaptiveLimit`` of slots:
  it grows while the receiver answers (quickly doubling at first, then by one per
  round trip), up to the ceiling (twice that for a quick receiver, ``QUICK_REACH``), and
  halves when it times out, refuses connections, answers 429/503, or leaves an attempt
  unanswered for long (``STALL_SECONDS``).
* **A reserve for light tenants.** A tenant's backlog may fill the worker but for
  ``RESERVE_SHARE`` of its slots, which only tenants holding little may use: the next
  tenant's delivery finds a free slot at once, even when the worker is busy.
* **A reserve for receivers that answer.** Subscriptions that have not proven they answer
  (new to this worker, or troubled lately) share at most ``TROUBLED_SHARE`` of the
  worker's slots, so a crowd of hanging endpoints can never fill it: the rest is for
  receivers that answer.
* **Claiming ahead.** A subscription whose receiver answers quickly (``AHEAD_LATENCY_MS``)
  may hold up to its limit again of deliveries claimed but not started (``waiting``):
  each attempt that ends starts the next at once, while the next claim is on its way.
  Without it a receiver that answers in a millisecond sits idle for every claim's round
  trips. Not for subscriptions with ``maxConcurrency`` or ``rateLimit``: what they lease
  is what the cluster lets them send, none of it is spent waiting.

The queue (``storage``) reports which subscriptions have due work (``Lane``) and what
cluster-wide room they have (``maxConcurrency``, ``rateLimit``); ``Scheduler.plan`` turns
that into how many deliveries to claim from each.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TypeVar

K = TypeVar("K", bound=Hashable)

INITIAL_LIMIT = 8
"""Attempts a subscription may have in flight before its receiver has answered any."""

RESERVE_SHARE = 0.1
"""Fraction of a worker's slots kept free for tenants that hold little: a tenant with a
backlog can fill the rest, never these, so another tenant's delivery starts at once."""

TROUBLED_SHARE = 0.5
"""Fraction of a worker's slots that unproven subscriptions (new or troubled) may hold."""

TROUBLE_SECONDS = 30.0
"""How long a timeout or refused connection marks a subscription as troubled."""

LATENCY_TOLERANCE = 2.0
"""A success slower than this multiple of the receiver's usual latency does not grow
the limit: the receiver is queueing our requests, more of them would only wait longer."""

LATENCY_SLACK_MS = 50.0

STALL_SECONDS = 2.0
"""An attempt unanswered this long marks its subscription as troubled before it times
out, so hanging receivers are held back within seconds, not one timeout later."""

AHEAD_LATENCY_MS = 100.0
"""A subscription whose receiver usually answers within this is claimed ahead: its
attempts end faster than a claim's round trips to the database."""

QUICK_REACH = 2
"""A subscription whose receiver usually answers within ``AHEAD_LATENCY_MS`` may grow to
this many times the ceiling. Its slots turn over fast, so how many it needs is set by the
distance (a receiver 50 ms away needs 100 in flight for 2,000 deliveries/s) and by our
own queue through a busy worker (7 ms an attempt in a drain here), not by what the
receiver can take. One that queues our requests until it answers slower than that is
held to the ceiling again."""

IDLE_SECONDS = 600.0
"""A subscription unused this long is forgotten (its limit starts over when it returns)."""


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
    last_used: float = 0.0
    cluster_limited: bool = False
    """It has ``maxConcurrency`` or ``rateLimit``: never claimed ahead."""

    def __post_init__(self) -> None:
        self.limit = min(self.limit, self.ceiling)

    @property
    def value(self) -> int:
        return max(1, int(min(self.limit, self.reach())))

    def reach(self) -> int:
        """The most slots it may grow to: its ceiling, ``QUICK_REACH`` times that while
        its receiver usually answers quickly and it has no cluster-wide limits."""
        usual = self.usual_latency_ms
        quick = usual is not None and usual <= AHEAD_LATENCY_MS and not self.cluster_limited
        return self.ceiling * QUICK_REACH if quick else self.ceiling

    def troubled(self, now: float) -> bool:
        return now < self.troubled_until

    def proven(self, now: float) -> bool:
        """It has answered (this worker) and has not been in trouble lately."""
        return self.usual_latency_ms is not None and not self.troubled(now)

    def ahead(self, now: float) -> int:
        """Deliveries it may hold claimed but not started (see "Claiming ahead")."""
        quick = self.proven(now) and (self.usual_latency_ms or 0.0) <= AHEAD_LATENCY_MS
        return self.value if quick and not self.cluster_limited else 0

    def answered(self, latency_ms: float) -> None:
        usual = self.usual_latency_ms
        if usual is None or latency_ms < usual:
            self.usual_latency_ms = latency_ms
        else:  # drift up slowly, so a receiver that became slower for good is relearned
            self.usual_latency_ms = usual + (latency_ms - usual) * 0.01
        if usual is not None and latency_ms > usual * LATENCY_TOLERANCE + LATENCY_SLACK_MS:
            return
        step = 1.0 if self.limit < self.threshold else 1.0 / self.limit
        self.limit = min(float(self.reach()), self.limit + step)

    def congested(self, started: float, now: float) -> None:
        """Halve, once per round trip: attempts that started before the last decrease
        were sent at the old limit and say nothing new about the lower one."""
        self.troubled_until = now + TROUBLE_SECONDS
        if started < self.last_decrease:
            return
        self.limit = max(1.0, min(self.limit, self.reach()) / 2)
        self.threshold = self.limit
        self.last_decrease = now

    def stall_seconds(self) -> float:
        """How long an unanswered attempt may take before the receiver counts as stalled:
        ``STALL_SECONDS``, or four times its usual latency for a receiver that is slow
        but answers."""
        usual = (self.usual_latency_ms or 0.0) / 1000
        return max(STALL_SECONDS, 4 * usual)


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
    tenant_of: dict[str, str] = field(default_factory=dict)
    """The tenant of each subscription held now."""
    waiting: dict[str, int] = field(default_factory=dict)
    """Deliveries claimed ahead, per subscription: leased to this worker, not started."""
    limits: dict[str, AdaptiveLimit] = field(default_factory=dict)

    @property
    def in_flight(self) -> int:
        return sum(self.held.values())

    def limit(self, sub_id: str) -> AdaptiveLimit:
        found = self.limits.get(sub_id)
        if found is None:
            found = self.limits[sub_id] = AdaptiveLimit(self.ceiling)
        return found

    def cap(
        self, sub_id: str, max_concurrency: int | None, rate_limit: float | None = None
    ) -> None:
        """Keep the subscription's limit under its own ``maxConcurrency``, if lower; note
        whether it has cluster-wide limits."""
        ceiling = min(max_concurrency or self.ceiling, self.ceiling)
        limit = self.limit(sub_id)
        limit.cluster_limited = max_concurrency is not None or rate_limit is not None
        if limit.ceiling != ceiling:
            limit.ceiling = ceiling
            limit.limit = min(limit.limit, ceiling)

    def room(self, sub_id: str) -> int:
        """Attempts of the subscription that may start now."""
        return _room(self.limits.get(sub_id), self.held.get(sub_id, 0), self.ceiling)

    def claimable(self, sub_id: str, now: float) -> int:
        """Deliveries of the subscription a claim may take now: its room, and room to
        wait (claimed ahead) for a receiver that answers quickly."""
        holding = self.held.get(sub_id, 0) + self.waiting.get(sub_id, 0)
        return _claimable(self.limits.get(sub_id), holding, self.ceiling, now)

    def saturated(self, now: float) -> list[str]:
        """Subscriptions this worker can take no more of now (the queue skips them)."""
        holding = dict.fromkeys([*self.held, *self.waiting])
        return [sub_id for sub_id in holding if self.claimable(sub_id, now) == 0]

    def wait(self, sub_id: str, tenant_id: str) -> None:
        """A claimed delivery of ``sub_id`` waits for room to start."""
        self.waiting[sub_id] = self.waiting.get(sub_id, 0) + 1
        self.tenant_of[sub_id] = tenant_id

    def stop_waiting(self, sub_id: str) -> None:
        """A waiting delivery of ``sub_id`` starts, or is given back to the queue."""
        _decrement(self.waiting, sub_id)
        if sub_id not in self.held and sub_id not in self.waiting:
            self.tenant_of.pop(sub_id, None)

    def planner(self, batch: int, now: float) -> Planner:
        """A frozen view for one claim of at most ``batch`` deliveries: the store may call
        it from its own thread while this worker's loop goes on changing what it holds."""
        held = dict(self.held)
        for sub_id, count in self.waiting.items():
            held[sub_id] = held.get(sub_id, 0) + count
        unproven = 0
        for sub_id, count in held.items():
            limit = self.limits.get(sub_id)
            if limit is None or not limit.proven(now):
                unproven += count
        free = max(0, self.capacity - sum(held.values()))
        tenant_held = dict(self.tenant_held)
        for sub_id, count in self.waiting.items():
            tenant = self.tenant_of.get(sub_id)
            if tenant is not None:
                tenant_held[tenant] = tenant_held.get(tenant, 0) + count
        return Planner(
            free=free,
            batch=min(batch, free),
            reserve=int(self.capacity * RESERVE_SHARE),
            now=now,
            ceiling=self.ceiling,
            unproven_room=max(0, int(self.capacity * self.troubled_share) - unproven),
            held=held,
            tenant_held=tenant_held,
            limits=self.limits,
        )

    def plan(self, lanes: Sequence[Lane], batch: int, now: float) -> dict[str, int]:
        return self.planner(batch, now)(lanes)

    def started(self, sub_id: str, tenant_id: str, now: float) -> None:
        self.held[sub_id] = self.held.get(sub_id, 0) + 1
        self.tenant_held[tenant_id] = self.tenant_held.get(tenant_id, 0) + 1
        self.tenant_of[sub_id] = tenant_id
        self.limit(sub_id).last_used = now

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
        if sub_id not in self.held and sub_id not in self.waiting:
            self.tenant_of.pop(sub_id, None)
        if signal is Signal.ANSWERED:
            self.limit(sub_id).answered(latency_ms)
        elif signal is Signal.CONGESTED:
            self.limit(sub_id).congested(started, now)

    def stalled(self, sub_id: str, started: float, now: float) -> None:
        """An attempt of ``sub_id`` that started at ``started`` is still unanswered."""
        limit = self.limits.get(sub_id)
        if limit is not None and now - started > limit.stall_seconds():
            limit.congested(started, now)

    def share(self, sub_id: str) -> float:
        """The fraction of this worker's slots the subscription holds now."""
        return self.held.get(sub_id, 0) / self.capacity if self.capacity else 0.0

    def forget_idle(self, now: float, idle_seconds: float = IDLE_SECONDS) -> int:
        """Drop what was learnt of subscriptions unused for a while (memory stays bounded)."""
        idle = [
            sub_id
            for sub_id, limit in self.limits.items()
            if sub_id not in self.held
            and sub_id not in self.waiting
            and not limit.troubled(now)
            and now - limit.last_used > idle_seconds
        ]
        for sub_id in idle:
            del self.limits[sub_id]
        return len(idle)


@dataclass(frozen=True)
class Planner:
    """``Scheduler.plan`` for one claim, on copies of what the worker held then."""

    free: int
    """Slots free in the worker now."""
    batch: int
    """Most deliveries this claim may take."""
    reserve: int
    """Slots kept free for tenants that hold little (see ``RESERVE_SHARE``)."""
    now: float
    ceiling: int
    unproven_room: int
    held: Mapping[str, int]
    """Per subscription: in flight and waiting to start."""
    tenant_held: Mapping[str, int]
    limits: Mapping[str, AdaptiveLimit]

    def __call__(self, lanes: Sequence[Lane]) -> dict[str, int]:
        """How many deliveries to claim from each lane with ``free`` slots to fill."""
        demand: dict[str, int] = {}
        for lane in lanes:
            sub_id = lane.subscription_id
            limit, holding = self.limits.get(sub_id), self.held.get(sub_id, 0)
            if lane.room is None:
                demand[sub_id] = _claimable(limit, holding, self.ceiling, self.now)
            else:  # cluster-wide limits: nothing is claimed ahead
                demand[sub_id] = min(_room(limit, holding, self.ceiling), lane.room)
        self._limit_unproven(demand)
        tenant_of = {lane.subscription_id: lane.tenant_id for lane in lanes}
        tenant_demand: dict[str, int] = {}
        for sub_id, wanted in demand.items():
            tenant = tenant_of[sub_id]
            tenant_demand[tenant] = tenant_demand.get(tenant, 0) + wanted
        tenant_order = list(dict.fromkeys(lane.tenant_id for lane in lanes))
        tenants = self._tenant_shares(tenant_demand, tenant_order)
        plan: dict[str, int] = {}
        for tenant, share in tenants.items():
            mine = {s: n for s, n in demand.items() if tenant_of[s] == tenant}
            order = [lane.subscription_id for lane in lanes if lane.tenant_id == tenant]
            plan.update(fair_shares(mine, self.held, share, order))
        return plan

    def _tenant_shares(self, demand: dict[str, int], order: list[str]) -> dict[str, int]:
        """Light tenants (holding under a quarter of the reserve) may use the reserve;
        the others only the slots beyond it, so a worker full of one tenant's work always
        has a slot for the next tenant's first delivery."""
        quota = max(1, self.reserve // 4)
        light = {
            t: min(n, quota - self.tenant_held.get(t, 0))
            for t, n in demand.items()
            if self.tenant_held.get(t, 0) < quota
        }
        shares = fair_shares(light, self.tenant_held, self.batch, order)
        given = sum(shares.values())
        left = {t: n - shares.get(t, 0) for t, n in demand.items()}
        room = min(self.batch - given, self.free - given - self.reserve)
        held = {t: self.tenant_held.get(t, 0) + shares.get(t, 0) for t in demand}
        for tenant, more in fair_shares(left, held, max(0, room), order).items():
            shares[tenant] = shares.get(tenant, 0) + more
        return shares

    def _limit_unproven(self, demand: dict[str, int]) -> None:
        unproven = [
            s for s in demand if (limit := self.limits.get(s)) is None or not limit.proven(self.now)
        ]
        if not unproven:
            return
        shares = fair_shares({s: demand[s] for s in unproven}, self.held, self.unproven_room)
        for sub_id in unproven:
            demand[sub_id] = shares.get(sub_id, 0)


def _room(limit: AdaptiveLimit | None, held: int, ceiling: int) -> int:
    value = limit.value if limit is not None else min(INITIAL_LIMIT, ceiling)
    return max(0, value - held)


def _claimable(limit: AdaptiveLimit | None, holding: int, ceiling: int, now: float) -> int:
    """Room for ``holding`` (in flight and waiting) to grow to the limit plus what may
    wait beyond it."""
    ahead = limit.ahead(now) if limit is not None else 0
    return _room(limit, holding - ahead, ceiling)


def _decrement(counts: dict[str, int], key: str) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


# --- the lanes' cluster-wide limits, kept in the database ------------------------------


@dataclass(frozen=True)
class LaneState:
    """A lane as stored: its subscription's limits, its token bucket, what is leased."""

    subscription_id: str
    tenant_id: str
    max_concurrency: int | None = None
    rate_limit: float | None = None
    tokens: float | None = None
    tokens_ms: int | None = None
    leased: int = 0
    """Deliveries of it leased to some worker now (in flight or about to be)."""
    lease_ends_ms: int | None = None
    """When the earliest of those leases runs out."""

    def tokens_at(self, now_ms: int) -> float:
        """The bucket holds up to one second's worth (at least one) and refills at ``rate``."""
        rate = self.rate_limit or 0.0
        burst = max(1.0, rate)
        if self.tokens is None or self.tokens_ms is None:
            return burst
        return min(burst, self.tokens + max(0, now_ms - self.tokens_ms) * rate / 1000)

    def room(self, now_ms: int) -> int | None:
        """Deliveries the cluster-wide limits let start now; None if it has none."""
        room: int | None = None
        if self.max_concurrency is not None:
            room = max(0, self.max_concurrency - self.leased)
        if self.rate_limit:
            tokens = int(self.tokens_at(now_ms))
            room = tokens if room is None else min(room, tokens)
        return room

    def lane(self, now_ms: int) -> Lane:
        return Lane(self.subscription_id, self.tenant_id, self.room(now_ms))

    def after_claim(self, took: int, now_ms: int, next_pending_ms: int | None) -> LaneUpdate:
        """The lane's new state once a claim took ``took`` deliveries from it.

        ``next_pending_ms`` is the earliest due time of its claimable deliveries, leased
        ones included (their due time is the end of the lease). A lane held back by its
        limits is parked: until its bucket refills, or until the earliest lease ends
        (recording an attempt of it wakes it sooner).
        """
        update = self.claimed(took, now_ms)
        return dataclasses.replace(update, next_due_ms=update.due(next_pending_ms, now_ms))

    def claimed(self, took: int, now_ms: int) -> LaneUpdate:
        """``after_claim`` but for the next due time (``next_due_ms`` is left None, not
        worked out), which ``LaneUpdate.due`` gives once the earliest due time of what is
        left is known (a store may work that out in the statement that writes the lane)."""
        tokens = self.tokens_at(now_ms) - took if self.rate_limit else None
        parked: int | None = None
        if self.max_concurrency is not None and self.leased + took >= self.max_concurrency:
            parked = self.lease_ends_ms or now_ms + PARKED_MS
        if self.rate_limit and tokens is not None and tokens < 1:
            wait_ms = min(PARKED_MS, (1 - tokens) / self.rate_limit * 1000)
            parked = max(parked or 0, now_ms + math.ceil(wait_ms))
        return LaneUpdate(
            self.subscription_id,
            served_ms=now_ms if took else None,
            tokens=tokens,
            next_due_ms=None,
            parked_until_ms=parked,
        )


PARKED_MS = 30_000
"""The longest a lane is parked: when the end of its leases is unknown (``maxConcurrency``),
and at most between two looks at its token bucket (however small its ``rateLimit``)."""


@dataclass(frozen=True)
class LaneUpdate:
    subscription_id: str
    served_ms: int | None
    """Set when the claim took from the lane (it goes to the back of the line)."""
    tokens: float | None
    next_due_ms: int | None
    parked_until_ms: int | None = None
    """Its limits are used up: work due before this waits until then."""

    def due(self, next_pending_ms: int | None, now_ms: int) -> int | None:
        """The lane's next due time, given the earliest due time of its claimable
        deliveries: that, unless it is due now and the lane is parked."""
        if next_pending_ms is None or next_pending_ms > now_ms or self.parked_until_ms is None:
            return next_pending_ms
        return max(next_pending_ms, self.parked_until_ms)
