"""The dispatcher on the in-memory store and a fake sender, in virtual time (looptime).

A second of receiver latency costs these tests nothing, so the scenarios of the
scheduler issue run here at full size: what is asserted is the scheduler's behaviour
(who waits for whom, how much of the worker a bad receiver can hold), in loop time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from tests.support.fakes import FakeSender, LoopClock, Received, Route
from tidings.apps import App
from tidings.config import Settings
from tidings.dispatcher.worker import (
    CLAIM_GAP,
    GATHER_WINDOW,
    LONGEST_WAIT,
    RELEASE_TIMEOUT,
    WATCH_INTERVAL,
    Dispatcher,
    DispatcherTuning,
    Transforms,
)
from tidings.domain.catalog import event_type
from tidings.domain.clock import Clock
from tidings.domain.deliveries import DeliveryStatus
from tidings.domain.scheduling import INITIAL_LIMIT, QUICK_REACH, STALL_SECONDS
from tidings.domain.subscriptions import Ordering, Subscription
from tidings.secretbox import SecretBox
from tidings.service import Tidings
from tidings.storage.errors import StorageUnavailable
from tidings.storage.memory import MemoryStore
from tidings.storage.records import ClaimedDelivery, ClaimRequest
from tidings.transform import (
    Cancelled,
    Transformed,
    TransformFailed,
    TransformOutcome,
    TransformUnavailable,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.looptime]

ORDERS = App("orders", [event_type("order.placed", "An order was placed.", {}, [], {"n": 1})])


@dataclass
class World:
    service: Tidings
    store: MemoryStore
    sender: FakeSender
    clock: LoopClock

    @classmethod
    def make(cls, tmp_path: Path, **settings: Any) -> World:
        key = Fernet.generate_key().decode()
        options: dict[str, Any] = {
            "env": "development",
            "data_dir": tmp_path,
            "encryption_key": key,
            "retry_base_delay": 1.0,
            **settings,
        }
        clock = LoopClock()
        store = MemoryStore(clock)
        service = Tidings(Settings(**options), store, SecretBox([key]), [ORDERS])
        return cls(service, store, FakeSender(service.settings.delivery_timeout), clock)

    def dispatcher(
        self, clock: Clock | None = None, transforms: Transforms | None = None, **tuning: Any
    ) -> Dispatcher:
        """A worker tuned as the service's settings say, but for ``tuning``'s knobs and a
        poll every half second."""
        s = self.service.settings
        knobs = replace(DispatcherTuning.from_settings(s), poll_interval=0.5)
        return Dispatcher(
            self.store,
            self.sender,
            self.service.secretbox,
            s.retry_policy,
            self.service.disable_subscription,
            breaker_threshold=s.breaker_threshold,
            tuning=replace(knobs, **tuning),
            clock=clock or self.clock,
            transforms=transforms,
        )

    @contextlib.asynccontextmanager
    async def running(self, *dispatchers: Dispatcher) -> AsyncIterator[None]:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(d.run(stop)) for d in dispatchers or [self.dispatcher()]]
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks)

    async def tenant(self, name: str) -> str:
        return (await self.store.keys.ensure_tenant(name)).id

    async def subscribe(
        self, tenant_id: str, url: str, route: Route | None = None, **options: Any
    ) -> Subscription:
        if route is not None:
            self.sender.routes[url] = route
        sub, _ = await self.service.create_subscription(tenant_id, url, ["order.placed"], **options)
        return sub

    async def emit(self, tenant_id: str, n: int = 0, key: str | None = None) -> str:
        draft = self.service.draft_event(tenant_id, "order.placed", {"n": n})
        stored, _ = await self.store.insert_event(replace(draft, ordering_key=key), None)
        return stored.id

    async def until(self, check: Callable[[], bool], timeout: float = 600) -> None:
        """Wait (in loop time) for a condition of the fake receivers."""
        async with asyncio.timeout(timeout):
            while not check():  # noqa: ASYNC110 - a fake receiver has no event to await
                await asyncio.sleep(0.01)


async def test_an_idle_tenant_waits_for_no_one(tmp_path: Path) -> None:
    """Tenant A: 6 subscriptions to a receiver answering after 1 s, 1,800 deliveries, in a
    worker of 200 slots that A alone could fill (6 x 50). Tenant B's events, emitted
    meanwhile, take the next slot that frees: they start within milliseconds."""
    world = World.make(tmp_path)
    a, b = await world.tenant("a"), await world.tenant("b")
    for n in range(6):
        await world.subscribe(a, f"http://a.test/{n}", Route(latency=1.0))
    await world.subscribe(b, "http://b.test/hook")
    async with world.running(world.dispatcher(concurrency=200)):
        for n in range(300):
            await world.emit(a, n)
        await asyncio.sleep(3.0)
        latencies = await lone_event_latencies(world, b, "http://b.test/hook")
        a_received = sum(len(world.sender.at(f"http://a.test/{n}")) for n in range(6))
    assert max(latencies) < 0.03, latencies
    assert a_received >= 180 * 3, "A meanwhile kept all but the reserve busy"


async def test_hanging_receivers_cannot_fill_the_worker(tmp_path: Path) -> None:
    """20 subscriptions to receivers that never answer beside one that does, in a worker
    of 100 slots: the healthy one keeps its latency, the hanging ones hold at most the
    reserve for unproven receivers."""
    world = World.make(tmp_path, delivery_timeout=10.0)
    t = await world.tenant("t")
    hanging = [f"http://hang.test/{n}" for n in range(20)]
    for url in hanging:
        await world.subscribe(t, url, Route(hang=True))
    await world.subscribe(t, "http://ok.test/hook")
    loop = asyncio.get_running_loop()
    sent: list[float] = []
    async with world.running(world.dispatcher(concurrency=100)):
        for n in range(300):  # 50 per second for 6 s
            sent.append(loop.time())
            await world.emit(t, n)
            await asyncio.sleep(0.02)
        await world.until(lambda: len(world.sender.at("http://ok.test/hook")) == 300)
        hanging_peak = sum(world.sender.peak.get(url, 0) for url in hanging)
    ok = world.sender.at("http://ok.test/hook")
    latencies = [r.at - sent[int(r.event["payload"]["n"])] for r in ok]  # type: ignore[index]
    assert max(latencies) < 0.05, sorted(latencies)[-5:]
    assert hanging_peak <= 50


async def test_a_hanging_receiver_is_held_back_before_it_times_out(tmp_path: Path) -> None:
    world = World.make(tmp_path, delivery_timeout=30.0)
    t = await world.tenant("t")
    sub = await world.subscribe(t, "http://hang.test/", Route(hang=True))
    dispatcher = world.dispatcher()
    async with world.running(dispatcher):
        for n in range(50):
            await world.emit(t, n)
        await asyncio.sleep(5.0)
        limit = dispatcher.scheduler.limit(sub.id)
        assert limit.value < INITIAL_LIMIT and limit.troubled(world.clock.monotonic())
    assert world.sender.peak["http://hang.test/"] == INITIAL_LIMIT


async def test_fifo_keys_arrive_in_order_through_failures(tmp_path: Path) -> None:
    world = World.make(tmp_path, retry_base_delay=0.5, retry_max_attempts=20)
    t = await world.tenant("t")
    flaky = Route(latency=0.01, status=lambda n: 500 if n % 3 == 0 else 200)
    await world.subscribe(t, "http://fifo.test/", flaky, ordering=Ordering.FIFO)
    async with world.running(world.dispatcher(), world.dispatcher()):
        for n in range(60):
            await world.emit(t, n, key=f"k{n % 4}")
        await world.until(lambda: _delivered(world) == 60)
    per_key: dict[str, list[int]] = {}
    for r in world.sender.at("http://fifo.test/"):
        n = int(r.event["payload"]["n"])  # type: ignore[index]
        per_key.setdefault(f"k{n % 4}", []).append(n)
    for key, order in per_key.items():
        deduplicated = list(dict.fromkeys(order))
        assert deduplicated == sorted(deduplicated), (key, order)
        # one at a time: a retry of n comes before anything after n
        assert order == sorted(order), (key, order)


def leased(world: World) -> int:
    return sum(d.claim_token is not None for d in world.store._data.deliveries.values())


def idle_time(received: list[Received], latency: float) -> float:
    """Seconds between the first and last request when none was in flight."""
    busy_until, idle = received[0].at + latency, 0.0
    for r in received[1:]:
        idle += max(0.0, r.at - busy_until)
        busy_until = max(busy_until, r.at + latency)
    return idle


async def test_an_event_to_an_idle_worker_is_claimed_at_once(tmp_path: Path) -> None:
    """No timer stands between the notification of new work and the claim: a gap there
    would be every event's latency whenever the system is not busy."""
    world = World.make(tmp_path)
    t = await world.tenant("t")
    await world.subscribe(t, "http://quick.test/")
    async with world.running(world.dispatcher()):
        latencies = await lone_event_latencies(world, t, "http://quick.test/")
    assert max(latencies) < CLAIM_GAP / 5, latencies


class ClockBehind(LoopClock):
    """A worker's host clock 2 ms behind the emitting host's."""

    def now_ms(self) -> int:
        return super().now_ms() - 2


async def test_new_work_from_a_host_whose_clock_runs_ahead_waits_no_poll(
    tmp_path: Path,
) -> None:
    """The event is due by the emitting host's clock, not yet by the worker's when the
    notice comes: the worker looks again ``CLAIM_GAP`` later, not at its next poll."""
    world = World.make(tmp_path)
    t = await world.tenant("t")
    await world.subscribe(t, "http://quick.test/")
    async with world.running(world.dispatcher(clock=ClockBehind(), poll_interval=1.0)):
        latencies = await lone_event_latencies(world, t, "http://quick.test/")
    assert max(latencies) <= 2 * CLAIM_GAP, latencies


async def test_new_work_cuts_short_the_wait_to_gather_freed_room(tmp_path: Path) -> None:
    """An event every 6 ms to a receiver answering in 2 ms: each answer frees room, and
    the worker waits ``GATHER_WINDOW`` for more to free before claiming, but not once an
    event is there to claim."""
    world = World.make(tmp_path)
    t = await world.tenant("t")
    await world.subscribe(t, "http://quick.test/", Route(latency=0.002))
    loop = asyncio.get_running_loop()
    emitted = []
    async with world.running(world.dispatcher()):
        for n in range(100):
            emitted.append(loop.time())
            await world.emit(t, n)
            await asyncio.sleep(CLAIM_GAP + 0.001)
        await world.until(lambda: len(world.sender.at("http://quick.test/")) == 100)
    received = {r.event["payload"]["n"]: r.at for r in world.sender.at("http://quick.test/")}  # type: ignore[index]
    latencies = [received[n] - at for n, at in enumerate(emitted)]
    assert max(latencies) < GATHER_WINDOW / 4, latencies


async def test_a_flood_of_notifications_with_nothing_due_is_claimed_at_a_bounded_rate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second of notifications, a thousand of them, with nothing to claim: claims are
    ``CLAIM_GAP`` apart, not one per notification."""
    world = World.make(tmp_path)
    claims = 0
    claim = world.store.claim

    async def counted(request: ClaimRequest) -> list[ClaimedDelivery]:
        nonlocal claims
        claims += 1
        return await claim(request)

    monkeypatch.setattr(world.store, "claim", counted)
    async with world.running(world.dispatcher(poll_interval=10.0)):
        for _ in range(1000):
            world.store.notify_work()
            await asyncio.sleep(0.001)
    assert 10 < claims <= 1.0 / CLAIM_GAP + 2, claims


async def test_a_quick_receiver_is_claimed_ahead(tmp_path: Path) -> None:
    """Each attempt that ends starts the next one claimed ahead: the receiver is never
    left idle while a claim is on its way (here: the wait to gather freed room). Every
    delivery is sent once, the limit holding what is in flight."""
    world = World.make(tmp_path)
    t = await world.tenant("t")
    await world.subscribe(t, "http://quick.test/", Route(latency=0.02))
    async with world.running(world.dispatcher()):
        for n in range(2000):
            await world.emit(t, n)
        await world.until(lambda: _delivered(world) == 2000)
    received = world.sender.at("http://quick.test/")
    reach = world.service.settings.subscription_concurrency * QUICK_REACH
    assert world.sender.peak["http://quick.test/"] <= reach
    assert sorted(int(r.event["payload"]["n"]) for r in received) == list(range(2000))  # type: ignore[index]
    idle = idle_time(received, 0.02)
    # once, before its first answers proved it quick (without claiming ahead: 0.4 s)
    assert idle <= GATHER_WINDOW + 0.001, f"the receiver sat idle {idle:.3f} s"


@pytest.mark.parametrize("limits", [{"max_concurrency": 500}, {"rate_limit": 100_000.0}])
async def test_cluster_limits_are_not_claimed_ahead_and_do_not_stall(
    tmp_path: Path, limits: dict[str, Any]
) -> None:
    """A quick receiver with ``maxConcurrency`` or ``rateLimit`` (too high to bind here):
    nothing waits in the worker, and the worker claims again as attempts end, not at the
    next poll, while other tenants' emits keep waking it."""
    world = World.make(tmp_path)
    t, other = await world.tenant("t"), await world.tenant("other")
    await world.subscribe(t, "http://limited.test/", Route(latency=0.05), **limits)
    await world.subscribe(other, "http://other.test/")
    dispatcher = world.dispatcher()
    most_waiting = 0

    def drained() -> bool:
        nonlocal most_waiting
        most_waiting = max(most_waiting, dispatcher._waiting_count)
        return _delivered(world) >= 2000

    async with world.running(dispatcher):
        for n in range(2000):
            await world.emit(t, n)
        while not drained():
            await world.emit(other)
            await asyncio.sleep(0.3)
    assert most_waiting == 0
    idle = idle_time(world.sender.at("http://limited.test/"), 0.05)
    # a gather window per refill (0.4 s); held to the next wake, it sat idle 9 s
    assert idle < 1.0, f"the receiver sat idle {idle:.3f} s"


@contextlib.asynccontextmanager
async def waiting_for(
    tmp_path: Path, url: str, settings: Mapping[str, Any] | None = None, **then: Any
) -> AsyncIterator[tuple[World, Dispatcher, Route]]:
    """A running dispatcher in which deliveries to ``url`` wait: the receiver proved
    quick, then its route changed as ``then`` says, and more events came."""
    world = World.make(tmp_path, **(settings or {}))
    route = Route(latency=0.001)
    dispatcher = world.dispatcher()
    t = await world.tenant("t")
    await world.subscribe(t, url, route)
    async with world.running(dispatcher):
        for n in range(50):
            await world.emit(t, n)
        await world.until(lambda: _delivered(world) >= 50)
        for name, value in then.items():
            setattr(route, name, value)
        for n in range(200):
            await world.emit(t, n)
        await world.until(lambda: dispatcher._waiting_count > 0)
        yield world, dispatcher, route


HANGING = {"delivery_timeout": 25.0, "claim_lease": 30.0}


async def test_deliveries_waiting_behind_a_receiver_that_stops_answering_go_back(
    tmp_path: Path,
) -> None:
    """A receiver that answered quickly hangs: what was claimed ahead for it goes back to
    the queue within ``LONGEST_WAIT``, long before the hanging attempts time out."""
    url = "http://turns.test/"
    async with waiting_for(tmp_path, url, HANGING, hang=True) as (world, dispatcher, _):
        await asyncio.sleep(LONGEST_WAIT + 2 * WATCH_INTERVAL)
        assert dispatcher._waiting_count == 0
        assert leased(world) == world.sender.in_flight[url], "none wait"


async def test_a_subscription_disabled_sends_nothing_that_waited(tmp_path: Path) -> None:
    """A receiver answers 410 Gone: the subscription is disabled, and what waited for it
    in the worker is not sent."""
    url = "http://gone.test/"
    async with waiting_for(tmp_path, url, latency=1.0) as (world, _, route):
        sent = world.sender.counts[url]
        route.status = 410
        await world.until(lambda: not world.sender.in_flight[url])
        await asyncio.sleep(1.0)
    assert world.sender.counts[url] == sent, "nothing started after the first 410"


async def test_a_disable_that_fails_does_not_stop_recording(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 410 Gone asks for the subscription to be disabled, and the database is down for
    it: the worker logs it and goes on recording what the other subscription delivers."""
    world = World.make(tmp_path)

    async def unavailable(*args: object) -> None:
        raise StorageUnavailable("ConnectionRefusedError: database down")

    monkeypatch.setattr(world.service, "disable_subscription", unavailable)
    t = await world.tenant("t")
    await world.subscribe(t, "http://gone.test/", Route(status=410))
    await world.subscribe(t, "http://ok.test/")
    async with world.running(world.dispatcher()):
        await world.emit(t, 0)
        await world.until(lambda: _delivered(world) == 1)
        await world.emit(t, 1)
        await world.until(lambda: _delivered(world) == 2)
    assert world.sender.counts["http://gone.test/"] >= 1


async def test_stopping_gives_back_what_waits(tmp_path: Path) -> None:
    """A worker that stops sends nothing new, and what it claimed ahead is due at once
    for the next worker, not when its lease ends."""
    url = "http://stop.test/"
    settings = {"delivery_timeout": 5.0, "claim_lease": 30.0}
    async with waiting_for(tmp_path, url, settings, latency=1.0) as (world, _, _):
        sent = world.sender.counts[url]
        stopped = world.clock.monotonic()
    assert world.sender.counts[url] == sent, "nothing started after stop"
    assert leased(world) == 0
    async with world.running(world.dispatcher()):
        await world.until(lambda: _delivered(world) == 250)
    assert world.clock.monotonic() - stopped < 29.0, "not held until the lease ended"


async def test_a_release_that_hangs_holds_up_neither_watching_nor_stopping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database does not answer when waiting deliveries go back: hanging receivers
    are still noticed, and the worker still stops (the leases end instead)."""

    async def never(deliveries: object) -> None:
        await asyncio.Event().wait()

    url = "http://hangs.test/"
    async with waiting_for(tmp_path, url, HANGING, hang=True) as (world, dispatcher, _):
        monkeypatch.setattr(world.store, "release", never)
        await asyncio.sleep(STALL_SECONDS + WATCH_INTERVAL)
        assert dispatcher._releases, "waiting deliveries are being given back"
        [sub_id] = dispatcher.scheduler.held
        assert dispatcher.scheduler.limit(sub_id).troubled(world.clock.monotonic())
    hanging_ends = max(r.at for r in world.sender.received) + 25.0
    stopped = world.clock.monotonic()
    assert stopped <= hanging_ends + RELEASE_TIMEOUT + 0.1, "it gave up on the release"


async def lone_event_latencies(world: World, tenant_id: str, url: str) -> list[float]:
    """Emit 20 events 0.1 s apart, each once the one before arrived: emit -> arrival."""
    loop = asyncio.get_running_loop()
    latencies = []
    for n in range(20):
        sent = loop.time()
        await world.emit(tenant_id, n)
        await world.until(partial(arrived_more_than, world, url, n))
        latencies.append(world.sender.at(url)[-1].at - sent)
        await asyncio.sleep(0.1)
    return latencies


def arrived_more_than(world: World, url: str, count: int) -> bool:
    return len(world.sender.at(url)) > count


def _delivered(world: World) -> int:
    return sum(
        d.status == DeliveryStatus.SUCCEEDED.value for d in world.store._data.deliveries.values()
    )


@dataclass
class SlowRecords:
    """A queue whose records take a second each, and which notes how many each held."""

    inner: MemoryStore
    sizes: list[int]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def record(self, outcomes: Any) -> dict[str, int]:
        self.sizes.append(len(outcomes))
        await asyncio.sleep(1.0)
        return await self.inner.record(outcomes)


async def test_what_finished_while_recording_is_recorded_a_batch_at_a_time(
    tmp_path: Path,
) -> None:
    """Attempts that end while a record is being written pile up; they are written in
    transactions of at most a claim's batch, so a claim never waits behind a whole
    wave's bookkeeping (on SQLite they share one writer)."""
    world = World.make(tmp_path)
    t = await world.tenant("t")
    await world.subscribe(t, "http://ok.test/")
    for n in range(23):
        await world.emit(t, n)
    sizes: list[int] = []
    dispatcher = world.dispatcher(batch_size=5)
    dispatcher._queue = SlowRecords(world.store, sizes)
    async with world.running(dispatcher):
        await world.until(lambda: _delivered(world) == 23)
    assert sum(sizes) == 23
    assert max(sizes) == 5 and len(sizes) > 23 // 5


async def test_max_concurrency_holds_across_workers(tmp_path: Path) -> None:
    world = World.make(tmp_path)
    t = await world.tenant("t")
    await world.subscribe(t, "http://slow.test/", Route(latency=0.5), max_concurrency=3)
    async with world.running(*(world.dispatcher() for _ in range(3))):
        for n in range(30):
            await world.emit(t, n)
        await world.until(lambda: _delivered(world) == 30)
    assert world.sender.peak["http://slow.test/"] == 3


async def test_rate_limit_holds_across_workers(tmp_path: Path) -> None:
    world = World.make(tmp_path)
    t = await world.tenant("t")
    await world.subscribe(t, "http://paced.test/", rate_limit=5.0)
    async with world.running(world.dispatcher(), world.dispatcher()):
        for n in range(30):
            await world.emit(t, n)
        await world.until(lambda: _delivered(world) == 30)
    times = sorted(r.at for r in world.sender.at("http://paced.test/"))
    # A burst of a second's worth (5), then 5 per second however many workers claim:
    # the other 25 need 5 s, and no second sees more than the burst and its refill.
    assert times[-1] - times[0] >= 4.9
    for first in range(len(times) - 10):
        assert times[first + 10] - times[first] >= 0.99, times


@dataclass
class Flaky:
    """A queue that fails while ``down`` is set, as a database in an outage does."""

    inner: MemoryStore
    down: bool = False
    failures: int = 0

    def __getattr__(self, name: str) -> Any:
        found = getattr(self.inner, name)
        if name in ("claim", "record", "report_lanes") and callable(found):
            return self._guarded(found)
        return found

    def _guarded(self, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                self.failures += 1
                raise StorageUnavailable("ConnectionRefusedError: database down")
            return await method(*args, **kwargs)

        return call


async def test_the_dispatcher_rides_out_a_database_outage(tmp_path: Path) -> None:
    world = World.make(tmp_path)
    t = await world.tenant("t")
    await world.subscribe(t, "http://ok.test/")
    flaky = Flaky(world.store)
    dispatcher = world.dispatcher()
    dispatcher._queue = flaky
    async with world.running(dispatcher):
        for n in range(10):
            await world.emit(t, n)
        await world.until(lambda: _delivered(world) == 10)
        flaky.down = True
        for n in range(10, 20):
            await world.emit(t, n)
        await asyncio.sleep(30.0)  # an outage of 30 s
        assert flaky.failures > 5
        flaky.down = False
        back = asyncio.get_running_loop().time()
        await world.until(lambda: _delivered(world) == 20)
        resumed_in = asyncio.get_running_loop().time() - back
    assert resumed_in < 3.0, "delivery resumes within seconds of the database's return"
    received = sorted(int(r.event["payload"]["n"]) for r in world.sender.at("http://ok.test/"))  # type: ignore[index]
    assert sorted(set(received)) == list(range(20))


async def test_a_lane_left_asleep_by_an_outage_is_woken_when_the_database_returns(
    tmp_path: Path,
) -> None:
    """An outage between an emit's commit and its lane's wake leaves the lane asleep with
    work: the first good claim after the outage repairs it, not the next retention run."""
    world = World.make(tmp_path)
    t = await world.tenant("t")
    sub = await world.subscribe(t, "http://ok.test/")
    flaky = Flaky(world.store)
    dispatcher = world.dispatcher()
    dispatcher._queue = flaky
    async with world.running(dispatcher):
        await world.emit(t, 0)
        await world.until(lambda: _delivered(world) == 1)
        flaky.down = True
        await world.emit(t, 1)
        world.store._data.lanes[sub.id].next_due_ms = None  # the wake the outage cut
        await asyncio.sleep(10.0)
        flaky.down = False
        await world.until(lambda: _delivered(world) == 2, timeout=5.0)


@dataclass
class FakeTransforms:
    """Stands in for the JavaScript engine: answers with ``outcome`` after ``seconds``
    (loop time), or raises ``TransformUnavailable`` while ``down``."""

    outcome: Callable[[dict[str, Any]], TransformOutcome]
    seconds: float = 0.0
    down: bool = False
    runs: int = 0

    async def run(
        self, tenant_id: str, script: str, webhook: Mapping[str, Any] | str
    ) -> TransformOutcome:
        self.runs += 1
        await asyncio.sleep(self.seconds)
        if self.down:
            raise TransformUnavailable("the engine is down")
        assert isinstance(webhook, str)
        return self.outcome(json.loads(webhook))


def reshaped(webhook: dict[str, Any]) -> TransformOutcome:
    return Transformed(webhook["url"], json.dumps({"n": webhook["payload"]["payload"]["n"]}))


async def transformed_world(tmp_path: Path, transforms: FakeTransforms) -> tuple[World, Any]:
    world = World.make(tmp_path, breaker_threshold=2)
    t = await world.tenant("t")
    sub = await world.subscribe(t, "http://js.test/")
    await world.store.subscriptions.update(t, sub.id, {"transformation": "handler"})
    return world, sub


def _statuses(world: World, sub_id: str) -> list[str]:
    return [d.status for d in world.store._data.sub_deliveries(sub_id)]


async def test_a_transformed_body_is_what_is_sent(tmp_path: Path) -> None:
    transforms = FakeTransforms(reshaped)
    world, sub = await transformed_world(tmp_path, transforms)
    async with world.running(world.dispatcher(transforms=transforms)):
        await world.emit(sub.tenant_id, 7)
        await world.until(lambda: len(world.sender.at("http://js.test/")) == 1)
    assert world.sender.at("http://js.test/")[0].event == {"n": 7}


async def test_cancels_and_failures_end_at_once_and_spare_the_breaker(tmp_path: Path) -> None:
    """Breaker threshold 2, three cancels and three script failures: no POST, no retry,
    the subscription stays enabled with no failure streak."""

    def cancel_odd(webhook: dict[str, Any]) -> TransformOutcome:
        if webhook["payload"]["payload"]["n"] % 2:
            return Cancelled()
        return TransformFailed("error", "ReferenceError: x is not defined", 2)

    transforms = FakeTransforms(cancel_odd)
    world, sub = await transformed_world(tmp_path, transforms)
    async with world.running(world.dispatcher(transforms=transforms)):
        for n in range(6):
            await world.emit(sub.tenant_id, n)
        await world.until(lambda: "pending" not in _statuses(world, sub.id))
    assert sorted(_statuses(world, sub.id)) == ["cancelled"] * 3 + ["failed"] * 3
    assert transforms.runs == 6, "not retried"
    assert world.sender.received == []
    state = await world.store.subscriptions.get(sub.tenant_id, sub.id)
    assert state is not None and state.enabled and state.consecutive_failures == 0


async def test_an_engine_that_cannot_run_is_retried_and_spares_the_breaker(
    tmp_path: Path,
) -> None:
    transforms = FakeTransforms(reshaped, down=True)
    world, sub = await transformed_world(tmp_path, transforms)
    async with world.running(world.dispatcher(transforms=transforms)):
        for n in range(3):
            await world.emit(sub.tenant_id, n)
        await world.until(lambda: transforms.runs >= 6)  # each tried twice: retried
        state = await world.store.subscriptions.get(sub.tenant_id, sub.id)
        assert state is not None and state.enabled and state.consecutive_failures == 0
        transforms.down = False
        await world.until(lambda: len(world.sender.at("http://js.test/")) == 3)
    assert set(_statuses(world, sub.id)) == {"succeeded"}


async def test_time_spent_transforming_is_not_the_receivers(tmp_path: Path) -> None:
    """A transformation that waits 5 s for the engine: the receiver answers at once, so its
    slot limit is not cut as if it had hung (the stall clock starts at the POST)."""
    transforms = FakeTransforms(reshaped, seconds=5.0)
    world, sub = await transformed_world(tmp_path, transforms)
    dispatcher = world.dispatcher(transforms=transforms)
    async with world.running(dispatcher):
        for n in range(4):
            await world.emit(sub.tenant_id, n)
        await world.until(lambda: len(world.sender.at("http://js.test/")) == 4)
    assert dispatcher.scheduler.limit(sub.id).value >= INITIAL_LIMIT
