"""A ``tidings worker`` stopped by SIGTERM finishes what it started and leaves the rest free.

The worker claims only what it starts at once (``SUBSCRIPTION_CONCURRENCY`` in flight,
leased for ``LEASE`` seconds): no delivery waits in a local queue behind a claim. The
receiver holds the in-flight POSTs while the worker gets SIGTERM, then answers them. The
worker must wait for the in-flight POSTs, record them as succeeded, and exit 0. A second
worker then delivers the rest in far less time than the lease: nothing was left stuck
behind a claim.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import eventually
from tests.support.processes import Process, tidings_env
from tests.support.receiver import Receiver
from tidings.config import Settings
from tidings.domain.deliveries import DeliveryStatus
from tidings.service import Tidings
from tidings.storage.schema import deliveries

pytestmark = pytest.mark.asyncio

EVENTS = 10
SUBSCRIPTION_CONCURRENCY = 2  # in flight, and claimed: the worker claims no more
LEASE = 60  # seconds: no claim can expire while the test runs
EXIT_TIMEOUT = 20.0  # seconds the SIGTERMed worker has to finish and exit
REDELIVERY_TIMEOUT = 15.0  # seconds the second worker has for the rest (far below LEASE)
READY_LINE = "tidings worker: delivering"


async def delivery_rows(tidings: Tidings) -> list[Any]:
    query = deliveries.select().order_by(deliveries.c.id)
    return await tidings.store.db.read(lambda conn: conn.execute(query).mappings().all())  # type: ignore[attr-defined,no-any-return]


def claims_are(tidings: Tidings, count: int) -> Callable[[], Awaitable[bool]]:
    """A condition for ``eventually``: exactly ``count`` delivery rows hold a claim."""

    async def check() -> bool:
        rows = await delivery_rows(tidings)
        return sum(row["claim_token"] is not None for row in rows) == count

    return check


async def within(check: Callable[[], Awaitable[bool]], timeout: float, failure: str) -> None:
    """``eventually``, failing with ``failure`` rather than a bare timeout."""
    try:
        await eventually(check, timeout=timeout)
    except TimeoutError:
        pytest.fail(f"{failure} (within {timeout}s)")


def received_ids(receiver: Receiver, path: str) -> list[str]:
    return [r.headers["X-Webhook-Id"] for r in receiver.at(path)]


async def test_sigterm_finishes_in_flight_and_leaves_the_rest_free(
    tmp_path: Path, receiver: Receiver, database_url: str
) -> None:
    data = tmp_path / "data"
    env = tidings_env(
        data,
        TIDINGS_DATABASE_URL=database_url,
        TIDINGS_CLAIM_LEASE=str(LEASE),
        TIDINGS_SUBSCRIPTION_CONCURRENCY=str(SUBSCRIPTION_CONCURRENCY),
        TIDINGS_DELIVERY_TIMEOUT="40",  # a held POST must not time out on a loaded machine
    )
    settings = Settings(data_dir=data, env="development", database_url=database_url)
    tidings = Tidings.from_settings(settings)
    await tidings.store.migrate()  # before any worker, which would race to migrate

    release = asyncio.Event()

    async def respond(_count: int) -> web.Response:
        await release.wait()  # every POST waits until the test lets it through
        return web.Response(status=200, text="ok")

    url = receiver.on("/hold", respond)
    key, _ = await tidings.create_api_key("acme", ["admin"])
    sub, _ = await tidings.create_subscription(key.tenant_id, url, ["client.created"])
    emitted = [
        (await tidings.emit(key.tenant_id, "client.created", {"n": n}))[0].id for n in range(EVENTS)
    ]
    # All rows exist before the worker starts, so its first claim fills its share at once.

    first = Process(["worker"], env, tmp_path / "worker1.log")
    second: Process | None = None
    try:
        # 1. Two POSTs held at the receiver, and only those two deliveries claimed.
        held = await receiver.wait_count("/hold", SUBSCRIPTION_CONCURRENCY, timeout=30)
        only_in_flight = claims_are(tidings, SUBSCRIPTION_CONCURRENCY)
        await within(only_in_flight, 15, "the worker holds claims it did not start")
        assert len(receiver.at("/hold")) == SUBSCRIPTION_CONCURRENCY
        assert READY_LINE in first.log.read_text()
        in_flight = {r.headers["X-Webhook-Id"] for r in held}

        # 2. SIGTERM while those POSTs are in flight: the worker waits for them.
        first.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(1.0)  # what must not happen (an early exit) has no event to await
        code = first.proc.poll()
        assert code is None, f"SIGTERM ended the worker ({code}) mid-POST:\n{first.log.read_text()}"
        assert await only_in_flight(), "the stopping worker claimed more"

        # 3. Answer the held POSTs: the worker records them and exits cleanly.
        released = time.monotonic()
        release.set()
        try:
            code = await asyncio.to_thread(first.proc.wait, EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker still running {EXIT_TIMEOUT}s after SIGTERM")
        print(f"worker exited {code} {time.monotonic() - released:.2f}s after the release")
        log = first.log.read_text()
        assert code == 0, log
        assert "record_abandoned" not in log, log
        assert sorted(received_ids(receiver, "/hold")) == sorted(in_flight), "a queued POST ran"

        rows = await delivery_rows(tidings)
        now = int(time.time() * 1000)
        statuses = Counter(r["status"] for r in rows)
        assert statuses == {
            DeliveryStatus.SUCCEEDED.value: SUBSCRIPTION_CONCURRENCY,
            DeliveryStatus.PENDING.value: EVENTS - SUBSCRIPTION_CONCURRENCY,
        }, f"in-flight outcomes not recorded: {dict(statuses)}"
        rest = [r for r in rows if r["status"] == DeliveryStatus.PENDING.value]
        assert all(r["claim_token"] is None for r in rows), "a claim outlived its worker"
        assert all(r["due_ms"] <= now for r in rest), "a released delivery is not due"
        assert all(r["attempts"] == 0 for r in rest), rest
        for event_id in in_flight:
            attempts = await tidings.store.events.event_attempts(key.tenant_id, event_id)
            assert [(a.subscription_id, a.attempt, a.outcome, a.status_code) for a in attempts] == [
                (sub.id, 1, DeliveryStatus.SUCCEEDED.value, 200)
            ], attempts

        # 4. A second worker delivers the rest long before any lease could have run out.
        started = time.monotonic()
        second = Process(["worker"], env, tmp_path / "worker2.log")
        await receiver.wait_for(
            lambda: set(received_ids(receiver, "/hold")) >= set(emitted),
            timeout=REDELIVERY_TIMEOUT,
        )
        print(f"second worker delivered the rest in {time.monotonic() - started:.2f}s")

        async def all_succeeded() -> bool:
            counts = await tidings.store.queue.delivery_counts()
            return counts == {DeliveryStatus.SUCCEEDED.value: EVENTS}

        await eventually(all_succeeded, timeout=15)
        assert sorted(received_ids(receiver, "/hold")) == sorted(emitted), "a delivery repeated"
        for event_id in emitted:
            attempts = await tidings.store.events.event_attempts(key.tenant_id, event_id)
            assert [(a.attempt, a.outcome) for a in attempts] == [(1, "succeeded")], attempts
    finally:
        release.set()  # the receiver answers while the workers stop (off the event loop)
        await asyncio.to_thread(first.stop)
        if second is not None:
            assert await asyncio.to_thread(second.stop) == 0, second.log.read_text()
        await tidings.close()
