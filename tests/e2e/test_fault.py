"""Fault test: SIGKILLed dispatchers lose no delivery (at-least-once under chaos).

While ``EVENTS`` events are emitted for two subscriptions on a real receiver, a chaos loop
SIGKILLs a random ``tidings worker`` at random moments (seeded, the seed is printed) and
starts a replacement each time. PostgreSQL runs 3 workers sharing the database (claims
with ``FOR UPDATE SKIP LOCKED``); SQLite runs 1. When the dust settles it proves:

* every event reached every subscription at least once (no loss) and nothing else arrived;
* no delivery row is left pending and every row is ``succeeded``;
* duplicates, the price of at-least-once, stay within what the kills can explain.

The duplicate bound: a duplicate is a POST the receiver got whose outcome was not
committed in time, so the row fell due again when its lease ran out. A SIGKILL loses the
outcomes the worker held uncommitted: its in-flight POSTs (at most ``CONCURRENCY``) and the
finished ones queued for, or inside, the recorder's transaction (at most about one claim
batch at these rates). So ``duplicates <= kills * (CONCURRENCY + BATCH)``. Two causes that
are not the kills' doing also repeat deliveries, so the test reports them separately: a
record transaction that fails (the worker logs ``record_failed``; its leases run out), and
an outcome committed after its lease ran out (two committed attempts for one delivery).

``FAULT_SEED=<n>`` replays another chaos schedule (timings still vary run to run).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import eventually
from tests.support.processes import Process, tidings_env
from tests.support.receiver import Receiver
from tidings.config import Settings
from tidings.domain.deliveries import DeliveryStatus
from tidings.service import Tidings

pytestmark = pytest.mark.asyncio

SEED = int(os.environ.get("FAULT_SEED", "20260128"))
EVENTS = 300
KILLS = 8
LEASE = 2  # seconds a claim lasts; a killed worker's rows fall due again after it
CONCURRENCY = 25  # in-flight POSTs per worker
BATCH = 25  # deliveries per claim
CHAOS_SECONDS = 20.0  # the chaos loop stops early rather than run past this
TIME_LIMIT = 50.0  # the whole test, failing or not (a passing run takes 10-30 s)
SUBSCRIPTIONS = {"/exact": ["client.created"], "/wildcard": ["client.*"]}
READY_LINE = "tidings worker: delivering"


class Workers:
    """The ``tidings worker`` processes under test: started, SIGKILLed and replaced."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self._env = env
        self._logs = logs
        self.live: list[Process] = []
        self.everyone: list[Process] = []

    def start(self) -> Process:
        process = Process(["worker"], self._env, self._logs / f"worker{len(self.everyone)}.log")
        self.live.append(process)
        self.everyone.append(process)
        return process

    def check_alive(self) -> None:
        for process in self.live:
            code = process.proc.poll()
            assert code is None, f"worker exited by itself ({code}):\n{process.log.read_text()}"

    async def ready(self, timeout: float = 30.0) -> None:
        """Wait until every live worker has migrated and entered its dispatch loop."""

        async def all_ready() -> bool:
            self.check_alive()
            return all(READY_LINE in p.log.read_text() for p in self.live)

        await eventually(all_ready, timeout=timeout, interval=0.05)

    def kill_one(self, rng: random.Random) -> Process:
        self.check_alive()
        victim = rng.choice(self.live)
        victim.kill()
        self.live.remove(victim)
        return victim

    async def stop_live(self) -> None:
        """Stop the survivors gracefully (SIGTERM); each must exit cleanly."""
        for process in self.live:
            code = await asyncio.to_thread(process.stop)  # the receiver keeps answering
            assert code == 0, process.log.read_text()

    def record_failures(self) -> int:
        """Batches of outcomes a worker failed to commit (it logged ``record_failed``)."""
        return sum(p.log.read_text().count("record_failed") for p in self.everyone)

    async def stop_all(self) -> None:
        for process in self.everyone:
            await asyncio.to_thread(process.stop)


class SlowOk:
    """Answers 200 after 0-20 ms; ``busy`` is set while a request awaits its answer."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self.in_progress = 0
        self.busy = asyncio.Event()

    async def __call__(self, _count: int) -> web.Response:
        self.in_progress += 1
        self.busy.set()
        try:
            await asyncio.sleep(self._rng.uniform(0, 0.02))
        finally:
            self.in_progress -= 1
            if not self.in_progress:
                self.busy.clear()
        return web.Response(status=200, text="ok")


async def emit_events(tidings: Tidings, tenant_id: str, rng: random.Random) -> list[str]:
    """Emit ``EVENTS`` events in random bursts, spread over the chaos window."""
    ids: list[str] = []
    while len(ids) < EVENTS:
        for _ in range(min(rng.randint(5, 15), EVENTS - len(ids))):
            event, _ = await tidings.emit(tenant_id, "client.created", {"n": len(ids)})
            ids.append(event.id)
        await asyncio.sleep(rng.uniform(0.1, 0.5))
    return ids


async def chaos(workers: Workers, rng: random.Random, responder: SlowOk) -> tuple[int, int]:
    """SIGKILL a random worker ``KILLS`` times and replace it; return (kills, mid-delivery).

    Each kill comes at a random moment after the workers are up; every other one then
    waits (up to a second) for a POST to be in progress, so that some land mid-delivery.
    """
    kills = mid_delivery = 0
    begun = time.monotonic()
    deadline = begun + CHAOS_SECONDS
    while kills < KILLS and time.monotonic() < deadline:
        await workers.ready()
        await asyncio.sleep(rng.uniform(0.05, 0.6))
        if kills % 2 == 0:  # every other kill waits for a POST to be in progress
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(responder.busy.wait(), timeout=1.0)
        busy = responder.in_progress
        victim = workers.kill_one(rng)
        kills += 1
        mid_delivery += busy > 0
        at = time.monotonic() - begun
        print(f"kill {kills} at {at:.1f}s: {victim.log.name}, {busy} POSTs in progress")
        workers.start()
    return kills, mid_delivery


def received_ids(receiver: Receiver, path: str) -> list[str]:
    return [r.headers["X-Webhook-Id"] for r in receiver.at(path)]


def everything_received(receiver: Receiver, ids: set[str]) -> Callable[[], bool]:
    return lambda: all(ids <= set(received_ids(receiver, path)) for path in SUBSCRIPTIONS)


async def committed_attempts(
    tidings: Tidings, tenant_id: str, ids: set[str]
) -> Counter[tuple[str, str]]:
    """Logged attempts per (subscription id, event id); every one must have succeeded."""
    tally: Counter[tuple[str, str]] = Counter()
    for event_id in ids:
        for attempt in await tidings.store.events.event_attempts(tenant_id, event_id):
            assert attempt.outcome == "succeeded", attempt
            tally[attempt.subscription_id, attempt.event_id] += 1
    return tally


async def settle(receiver: Receiver, tidings: Tidings, ids: set[str]) -> None:
    """Wait until every event reached every subscription and no delivery row is pending."""
    await receiver.wait_for(everything_received(receiver, ids), timeout=20)

    async def no_pending() -> bool:
        return DeliveryStatus.PENDING.value not in await tidings.store.queue.delivery_counts()

    await eventually(no_pending, timeout=15)


async def test_sigkilled_workers_lose_no_delivery(
    tmp_path: Path,
    receiver: Receiver,
    database_url: str,
    record_property: Callable[[str, object], None],
) -> None:
    worker_count = 3 if database_url.startswith("postgresql") else 1
    print(f"fault test: seed={SEED} workers={worker_count} events={EVENTS} kills<={KILLS}")
    record_property("seed", SEED)
    rng = random.Random(SEED)
    responder = SlowOk(random.Random(rng.random()))
    producer_rng = random.Random(rng.random())

    data = tmp_path / "data"
    settings = Settings(data_dir=data, env="development", database_url=database_url)
    tidings = Tidings.from_settings(settings)
    await tidings.store.migrate()  # before any worker, which would race to migrate and make keys
    key, _ = await tidings.create_api_key("acme", ["admin"])
    for path, patterns in SUBSCRIPTIONS.items():
        await tidings.create_subscription(key.tenant_id, receiver.on(path, responder), patterns)

    env = tidings_env(
        data,
        TIDINGS_DATABASE_URL=database_url,
        TIDINGS_CLAIM_LEASE=str(LEASE),
        TIDINGS_DISPATCHER_CONCURRENCY=str(CONCURRENCY),
        TIDINGS_DISPATCHER_BATCH_SIZE=str(BATCH),
    )
    workers = Workers(env, tmp_path)
    started = time.monotonic()
    try:
        async with asyncio.timeout(TIME_LIMIT):
            for _ in range(worker_count):
                workers.start()
            await workers.ready()
            emitted, (kills, mid_delivery) = await asyncio.gather(
                emit_events(tidings, key.tenant_id, producer_rng),
                chaos(workers, rng, responder),
            )
            ids = set(emitted)
            assert len(ids) == EVENTS
            await settle(receiver, tidings, ids)  # no loss: this times out if one is missing
            await workers.ready()  # a replacement killed while booting would not exit cleanly
            await workers.stop_live()  # no attempts from here on: the counts below are final
            statuses = await tidings.store.queue.delivery_counts()
            committed = await committed_attempts(tidings, key.tenant_id, ids)
    finally:
        await workers.stop_all()
        await tidings.close()

    unique = EVENTS * len(SUBSCRIPTIONS)
    assert statuses == {DeliveryStatus.SUCCEEDED.value: unique}, statuses
    assert len(committed) == unique, "a delivery succeeded without logging its attempt"
    received = {path: received_ids(receiver, path) for path in SUBSCRIPTIONS}
    for path, got in received.items():
        assert set(got) == ids, f"{path} got events that were never emitted"

    total = sum(len(got) for got in received.values())
    duplicates = total - unique
    lost_outcomes = total - committed.total()  # POSTs whose result was never committed
    committed_late = committed.total() - unique  # two committed attempts for one delivery
    print(
        f"fault test: {kills} kills ({mid_delivery} mid-delivery), {total} received, "
        f"{unique} unique, duplicates={duplicates} (outcomes lost {lost_outcomes}, "
        f"committed after the lease {committed_late}, failed record batches "
        f"{workers.record_failures()}), {time.monotonic() - started:.1f}s"
    )
    record_property("duplicates", duplicates)
    record_property("kills", kills)
    record_property("lost_outcomes", lost_outcomes)
    record_property("committed_late", committed_late)
    assert kills >= KILLS // 2, "the chaos loop ran out of time before killing enough"
    assert duplicates <= kills * (CONCURRENCY + BATCH), duplicates
