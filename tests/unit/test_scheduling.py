"""The scheduling policy on its own: fair shares, adaptive limits, lanes' cluster limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.domain.scheduling import (
    AHEAD_LATENCY_MS,
    INITIAL_LIMIT,
    PARKED_MS,
    QUICK_REACH,
    TROUBLE_SECONDS,
    AdaptiveLimit,
    Lane,
    LaneState,
    Scheduler,
    Signal,
    fair_shares,
)


def test_fair_shares_fill_the_least_held_first() -> None:
    # c (holding 0) catches up with b (holding 2), then both rise together to 4: a,
    # already holding 6, gets nothing while the others hold less.
    assert fair_shares({"a": 10, "b": 10, "c": 10}, {"a": 6, "b": 2}, 6) == {"c": 4, "b": 2}


def test_fair_shares_respect_demand_and_capacity() -> None:
    assert fair_shares({"a": 1, "b": 100}, {}, 10) == {"a": 1, "b": 9}
    assert fair_shares({"a": 0, "b": 0}, {}, 10) == {}
    assert fair_shares({"a": 5}, {}, 0) == {}


def test_fair_shares_ties_follow_the_order() -> None:
    assert fair_shares({"a": 1, "b": 1}, {}, 1, order=["b", "a"]) == {"b": 1}


@given(
    demand=st.dictionaries(st.sampled_from("abcdef"), st.integers(0, 50), max_size=6),
    held=st.dictionaries(st.sampled_from("abcdef"), st.integers(0, 50), max_size=6),
    capacity=st.integers(0, 200),
)
def test_fair_shares_are_max_min_fair(
    demand: dict[str, int], held: dict[str, int], capacity: int
) -> None:
    shares = fair_shares(demand, held, capacity)
    assert sum(shares.values()) == min(capacity, sum(demand.values()))
    assert all(0 < n <= demand[k] for k, n in shares.items())
    level = {k: held.get(k, 0) + shares.get(k, 0) for k in demand}
    for k in shares:
        # whoever got a slot ended at most one above anyone left wanting more
        for other in demand:
            if shares.get(other, 0) < demand[other]:
                assert level[k] <= level[other] + 1


def test_an_idle_tenant_is_served_before_a_busy_one() -> None:
    scheduler = Scheduler(capacity=100, ceiling=50)
    scheduler.limit("busy-sub").limit = 50
    for _ in range(40):
        scheduler.started("busy-sub", "busy", 0.0)
    lanes = [Lane("busy-sub", "busy"), Lane("idle-sub", "idle")]
    plan = scheduler.plan(lanes, batch=1, now=0.0)
    assert plan == {"idle-sub": 1}


def test_tenants_share_before_their_subscriptions_do() -> None:
    scheduler = Scheduler(capacity=1000, ceiling=50)
    many = [Lane(f"a{i}", "a") for i in range(10)]
    plan = scheduler.plan([*many, Lane("b0", "b")], batch=16, now=0.0)
    assert plan["b0"] == 8, "tenant b's one subscription gets half, not 1/11"
    assert sum(plan.get(f"a{i}", 0) for i in range(10)) == 8


def test_a_lane_gets_no_more_than_its_cluster_room_or_its_limit() -> None:
    scheduler = Scheduler(capacity=1000, ceiling=50)
    plan = scheduler.plan([Lane("s", "t", room=3)], batch=100, now=0.0)
    assert plan == {"s": 3}
    plan = scheduler.plan([Lane("s", "t")], batch=100, now=0.0)
    assert plan == {"s": INITIAL_LIMIT}
    for _ in range(INITIAL_LIMIT):
        scheduler.started("s", "t", 0.0)
    assert scheduler.saturated(0.0) == ["s"]
    assert scheduler.plan([Lane("s", "t")], batch=100, now=0.0) == {}


def test_limit_doubles_per_round_trip_then_grows_by_one() -> None:
    limit = AdaptiveLimit(ceiling=100)
    for _ in range(INITIAL_LIMIT):
        limit.answered(latency_ms=10)
    assert limit.value == 2 * INITIAL_LIMIT
    limit.congested(started=0.0, now=1.0)
    assert limit.value == INITIAL_LIMIT
    before = limit.limit
    for _ in range(INITIAL_LIMIT):
        limit.answered(latency_ms=10)
    assert limit.limit - before < 1.01, "after a decrease, growth is additive"


def test_limit_halves_once_per_round_trip_and_never_below_one() -> None:
    limit = AdaptiveLimit(ceiling=100)
    limit.congested(started=0.0, now=10.0)
    limit.congested(started=5.0, now=10.5)  # sent before the decrease: old news
    assert limit.value == INITIAL_LIMIT // 2
    for n in range(20):
        limit.congested(started=11.0 + n, now=11.5 + n)
    assert limit.value == 1
    assert limit.troubled(11.0 + 20) and not limit.troubled(40.0 + TROUBLE_SECONDS)


def test_limit_stops_growing_while_latency_inflates() -> None:
    limit = AdaptiveLimit(ceiling=100)
    limit.answered(latency_ms=20)
    grown = limit.limit
    limit.answered(latency_ms=500)  # queueing at the receiver
    assert limit.limit == grown
    limit.answered(latency_ms=25)
    assert limit.limit > grown


def test_a_quick_receiver_may_reach_twice_the_ceiling_and_a_slow_one_the_ceiling() -> None:
    quick, slow = AdaptiveLimit(ceiling=10), AdaptiveLimit(ceiling=10)
    for _ in range(100):
        quick.answered(latency_ms=5)
        slow.answered(latency_ms=AHEAD_LATENCY_MS + 400)
    assert (quick.value, slow.value) == (10 * QUICK_REACH, 10)


def test_a_quick_receiver_that_slows_down_is_held_to_the_ceiling_again() -> None:
    limit = AdaptiveLimit(ceiling=10)
    for _ in range(100):
        limit.answered(latency_ms=5)
    while (limit.usual_latency_ms or 0) <= AHEAD_LATENCY_MS:
        limit.answered(latency_ms=400)  # queueing: no growth, the usual latency drifts up
    assert limit.value == 10
    limit.congested(started=0.0, now=1.0)
    assert limit.value == 5, "halved from what it may hold, not from what it held when quick"


def test_a_quick_receiver_with_cluster_wide_limits_keeps_the_ceiling() -> None:
    scheduler = Scheduler(capacity=1000, ceiling=10)
    scheduler.cap("paced", max_concurrency=None, rate_limit=50.0)
    for _ in range(100):
        scheduler.limit("paced").answered(latency_ms=5)
    assert scheduler.limit("paced").value == 10


def test_limit_stays_under_its_ceiling() -> None:
    limit = AdaptiveLimit(ceiling=3)
    for _ in range(10):
        limit.answered(latency_ms=AHEAD_LATENCY_MS + 1)
    assert limit.value == 3


def test_unproven_subscriptions_share_a_bounded_part_of_the_worker() -> None:
    scheduler = Scheduler(capacity=40, ceiling=50, troubled_share=0.25)
    for n in range(5):
        scheduler.limit(f"hang{n}").congested(started=0.0, now=1.0)
    scheduler.limit("ok").answered(latency_ms=5)
    lanes = [Lane(f"hang{n}", f"t{n}") for n in range(5)] + [Lane("new", "t8"), Lane("ok", "t9")]
    plan = scheduler.plan(lanes, batch=40, now=2.0)
    assert sum(plan.get(f"hang{n}", 0) for n in [*range(5)]) + plan.get("new", 0) <= 10
    assert plan["new"] >= 1, "a new subscription gets its turn within the reserve"
    ok = scheduler.limit("ok").value
    assert plan["ok"] == 2 * ok, "a quick receiver gets its limit, and as much claimed ahead"


def test_finishing_an_attempt_feeds_the_limit() -> None:
    scheduler = Scheduler(capacity=10, ceiling=50)
    scheduler.started("s", "t", 0.0)
    scheduler.finished("s", "t", Signal.CONGESTED, 10_000, started=0.0, now=10.0)
    assert scheduler.limit("s").value == INITIAL_LIMIT // 2
    assert scheduler.held == {} and scheduler.tenant_held == {} and scheduler.tenant_of == {}


def test_idle_subscriptions_are_forgotten() -> None:
    scheduler = Scheduler(capacity=10, ceiling=50)
    scheduler.started("s", "t", 0.0)
    scheduler.finished("s", "t", Signal.ANSWERED, 5, started=0.0, now=1.0)
    assert scheduler.forget_idle(now=100.0, idle_seconds=600) == 0
    assert scheduler.forget_idle(now=1000.0, idle_seconds=600) == 1
    assert scheduler.limits == {}


def test_cap_holds_a_subscription_under_its_max_concurrency() -> None:
    scheduler = Scheduler(capacity=10, ceiling=50)
    scheduler.cap("s", 2)
    assert scheduler.plan([Lane("s", "t")], batch=10, now=0.0) == {"s": 2}


# --- lanes ------------------------------------------------------------------------------


def test_lane_room_is_its_concurrency_left_and_its_tokens() -> None:
    assert LaneState("s", "t").room(0) is None
    assert LaneState("s", "t", max_concurrency=5, leased=3).room(0) == 2
    assert LaneState("s", "t", max_concurrency=5, leased=7).room(0) == 0
    full = LaneState("s", "t", rate_limit=10)
    assert full.room(0) == 10, "a fresh bucket holds a second's worth"
    spent = LaneState("s", "t", rate_limit=10, tokens=0.0, tokens_ms=1_000)
    assert spent.room(1_000) == 0
    assert spent.room(1_350) == 3
    assert spent.room(100_000) == 10


def test_a_lane_out_of_tokens_is_parked_until_the_next_one() -> None:
    lane = LaneState("s", "t", rate_limit=2, tokens=2.0, tokens_ms=0)
    update = lane.after_claim(took=2, now_ms=0, next_pending_ms=0)
    assert update.tokens == 0.0
    assert update.next_due_ms == 500
    assert update.served_ms == 0


def test_a_lane_at_its_max_concurrency_is_parked_until_a_lease_ends() -> None:
    lane = LaneState("s", "t", max_concurrency=2, leased=1, lease_ends_ms=9_000)
    update = lane.after_claim(took=1, now_ms=1_000, next_pending_ms=1_000)
    assert update.next_due_ms == 9_000
    unknown = LaneState("s", "t", max_concurrency=1)
    assert unknown.after_claim(1, 1_000, 1_000).next_due_ms == 1_000 + PARKED_MS


def test_a_lane_with_nothing_pending_is_not_due() -> None:
    update = LaneState("s", "t").after_claim(took=0, now_ms=5, next_pending_ms=None)
    assert update.next_due_ms is None and update.served_ms is None


def test_a_busy_tenant_leaves_the_reserve_to_light_ones() -> None:
    scheduler = Scheduler(capacity=100, ceiling=200)
    scheduler.limit("big").limit = 200
    scheduler.limit("big").usual_latency_ms = 5
    assert scheduler.plan([Lane("big", "a")], batch=100, now=0.0) == {"big": 90}
    for _ in range(90):
        scheduler.started("big", "a", 0.0)
    assert scheduler.plan([Lane("big", "a")], batch=100, now=0.0) == {}
    light = scheduler.plan([Lane("big", "a"), Lane("new", "b")], batch=100, now=0.0)
    assert light == {"new": 2}, "a light tenant may use the reserve, up to its quota"


def test_a_tiny_rate_limit_parks_a_lane_for_a_bounded_time() -> None:
    lane = LaneState("s", "t", rate_limit=1e-300, tokens=0.0, tokens_ms=0)
    update = lane.after_claim(took=0, now_ms=1_000, next_pending_ms=0)
    assert update.next_due_ms == 1_000 + PARKED_MS


def quick(scheduler: Scheduler, sub_id: str, latency_ms: float = 5) -> int:
    """Let ``sub_id`` answer once in ``latency_ms``; its limit after that."""
    scheduler.started(sub_id, "t", 0.0)
    scheduler.finished(sub_id, "t", Signal.ANSWERED, latency_ms, started=0.0, now=0.0)
    return scheduler.limit(sub_id).value


def test_a_quick_receiver_is_claimed_ahead_by_its_limit_again() -> None:
    scheduler = Scheduler(capacity=1000, ceiling=50)
    limit = quick(scheduler, "s")
    assert scheduler.plan([Lane("s", "t")], batch=100, now=1.0) == {"s": 2 * limit}
    for _ in range(limit):
        scheduler.started("s", "t", 1.0)
    assert scheduler.room("s") == 0, "no more may start"
    assert scheduler.claimable("s", 1.0) == limit, "but as many may wait"
    for _ in range(limit):
        scheduler.wait("s", "t")
    assert scheduler.saturated(1.0) == ["s"]
    scheduler.finished("s", "t", Signal.NEUTRAL, 5, started=1.0, now=1.0)
    assert scheduler.room("s") == 1
    scheduler.stop_waiting("s")
    scheduler.started("s", "t", 1.0)
    assert scheduler.claimable("s", 1.0) == 1, "the one that started leaves room to claim"


@pytest.mark.parametrize("case", ["slow", "troubled", "new", "maxConcurrency", "rateLimit"])
def test_only_quick_untroubled_receivers_without_cluster_limits_are_claimed_ahead(
    case: str,
) -> None:
    scheduler = Scheduler(capacity=1000, ceiling=50)
    limit = quick(scheduler, "s", latency_ms=500 if case == "slow" else 5)
    lane = Lane("s", "t")
    if case == "troubled":
        scheduler.limit("s").congested(started=1.0, now=1.0)
        limit = scheduler.limit("s").value
    if case == "new":
        limit = INITIAL_LIMIT
        del scheduler.limits["s"]
    if case in ("maxConcurrency", "rateLimit"):  # both give the lane its room in the cluster
        lane = Lane("s", "t", room=40)
    assert scheduler.plan([lane], batch=100, now=2.0) == {"s": limit}


def test_deliveries_waiting_count_as_their_tenants_share() -> None:
    scheduler = Scheduler(capacity=1000, ceiling=50)
    quick(scheduler, "a-sub")
    for _ in range(3):
        scheduler.wait("a-sub", "a")
    plan = scheduler.plan([Lane("a-sub", "a"), Lane("b-sub", "b")], batch=4, now=1.0)
    assert plan == {"a-sub": 1, "b-sub": 3}, "b holds nothing, a holds three waiting"
    for _ in range(3):
        scheduler.stop_waiting("a-sub")
    assert scheduler.waiting == {} and scheduler.tenant_of == {}, "nothing left behind"
