"""Fault test: SIGKILLed dispatchers lose no delivery (at-least-once under chaos).

While ``EVENTS`` events are emitted for two subscriptions on a real receiver, a chaos loop
SIGKILLs a random ``tidings worker`` at random moments (seeded, the seed is printed) and
starts a replacement each time. PostgreSQL runs 3 workers sharing the database (claims
with ``FOR UPDATE SKIP LOCKED``); SQLite runs 1. When the dust settles it proves:

* every event reached every subscription at least once (no loss) and nothing else arrived;
* no delivery row is left pending and every row is ``succeeded``;
* duplicates, the price of at-least-once, stay within what the kills can explain.

The duplicate bound: a duplicate is a POST the receiver got whose outcome was never
committed, so the row fell due again when its lease ran out. A SIGKILL loses the outcomes
the worker held uncommitted: its in-flight POSTs (at most ``CONCURRENCY``) and the finished
ones queued for, or inside, the recorder's transaction (at most about one claim batch at
these rates). So ``duplicates <= kills * (CONCURRENCY + BATCH)``. A lease that expires
without a kill (a worker stalled past ``LEASE``) would also repeat a delivery; those show
up as extra committed attempts and are reported separately.

``FAULT_SEED=<n>`` replays another chaos schedule (timings still vary run to run).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web
from sqlalchemy import func, select

from tests.conftest import eventually
from tests.support.processes import Process, tidings_env
from tests.support.receiver import Receiver
from tidings.config import Settings
from tidings.domain.deliveries import DeliveryStatus
from tidings.service import Tidings
from tidings.storage.schema import attempts, deliveries
from tidings.storage.sql import SQLStore

pytestmark = pytest.mark.asyncio

SEED = int(os.environ.get("FAULT_SEED", "20260128"))
EVENTS = 300
KILLS = 8
LEASE = 2  # seconds a claim lasts; a killed worker's rows fall due again after it
CONCURRENCY = 25  # in-flight POSTs per worker
BATCH = 25  # deliveries per claim
CHAOS_SECONDS = 25.0  # the chaos loop stops early rather than run past this
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

    def stop_live(self) -> None:
        """Stop the survivors gracefully; each must exit cleanly."""
        for process in self.live:
            assert process.stop() == 0, process.log.read_text()

    def stop_all(self) -> None:
        for process in self.everyone:
            process.stop()


class SlowOk:
    """Answers 200 after 0-20 ms, counting requests in progress so kills land mid-delivery."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self.in_progress = 0

    async def __call__(self, _count: int) -> web.Response:
        self.in_progress += 1
        try:
            await asyncio.sleep(self._rng.uniform(0, 0.02))
        finally:
            self.in_progress -= 1
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
    """SIGKILL a random worker ``KILLS`` times and replace it; return (kills, mid-delivery)."""
    kills = mid_delivery = 0
    deadline = time.monotonic() + CHAOS_SECONDS
    while kills < KILLS and time.monotonic() < deadline:
        await workers.ready()
        await asyncio.sleep(rng.uniform(0.05, 0.6))
        busy = responder.in_progress
        victim = workers.kill_one(rng)
        kills += 1
        mid_delivery += busy > 0
        print(f"kill {kills}: {victim.log.name} ({busy} requests in progress at the receiver)")
        workers.start()
    return kills, mid_delivery


def received_ids(receiver: Receiver, path: str) -> list[str]:
    return [r.headers["X-Webhook-Id"] for r in receiver.at(path)]


def everything_received(receiver: Receiver, ids: set[str]) -> Callable[[], bool]:
    return lambda: all(ids <= set(received_ids(receiver, path)) for path in SUBSCRIPTIONS)


async def delivery_statuses(store: SQLStore) -> Counter[str]:
    query = select(deliveries.c.status, func.count()).group_by(deliveries.c.status)
    async with store.writer.connect() as conn:
        return Counter({status: count for status, count in (await conn.execute(query)).all()})


async def committed_attempts(store: SQLStore) -> Counter[str]:
    query = select(attempts.c.outcome, func.count()).group_by(attempts.c.outcome)
    async with store.writer.connect() as conn:
        return Counter({outcome: count for outcome, count in (await conn.execute(query)).all()})


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
    store = tidings.store
    assert isinstance(store, SQLStore)
    await store.migrate()  # before any worker, which would race to migrate and make keys
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
        for _ in range(worker_count):
            workers.start()
        await workers.ready()
        emitted, (kills, mid_delivery) = await asyncio.gather(
            emit_events(tidings, key.tenant_id, producer_rng),
            chaos(workers, rng, responder),
        )
        ids = set(emitted)
        assert len(ids) == EVENTS

        # No loss: every event reaches every subscription, despite the kills.
        await receiver.wait_for(everything_received(receiver, ids), timeout=30)

        async def settled() -> bool:
            return DeliveryStatus.PENDING.value not in await delivery_statuses(store)

        await eventually(settled, timeout=30)
        workers.check_alive()
        workers.stop_live()  # no more attempts from here on: the counts below are final

        statuses = await delivery_statuses(store)
        assert statuses == {"succeeded": EVENTS * len(SUBSCRIPTIONS)}, statuses
        outcomes = await committed_attempts(store)
        assert set(outcomes) == {"succeeded"}, outcomes

        received = {path: received_ids(receiver, path) for path in SUBSCRIPTIONS}
        for path, got in received.items():
            assert set(got) == ids, f"{path} got events that were never emitted"
        total = sum(len(got) for got in received.values())
        unique = EVENTS * len(SUBSCRIPTIONS)
        duplicates = total - unique
        lost_outcomes = total - outcomes["succeeded"]  # POSTs whose result was never committed
        resent_without_kill = outcomes["succeeded"] - unique
        elapsed = time.monotonic() - started
        print(
            f"fault test: {kills} kills ({mid_delivery} mid-delivery), {total} received, "
            f"{unique} unique, duplicates={duplicates} (lost outcomes {lost_outcomes}, "
            f"re-sent without a kill {resent_without_kill}), {elapsed:.1f}s"
        )
        record_property("duplicates", duplicates)
        record_property("kills", kills)
        record_property("lost_outcomes", lost_outcomes)

        assert kills >= KILLS // 2, "the chaos loop ran out of time before killing enough"
        assert duplicates <= kills * (CONCURRENCY + BATCH), duplicates
    finally:
        workers.stop_all()
        await tidings.close()
