"""The delivery queue's contract, held by all three stores: memory, SQLite, PostgreSQL.

Each test drives the queue as workers do (claim, record) with a plan of its own, and the
service for everything else (subscriptions, emits, enabling), so the rules the
dispatcher relies on are checked without a dispatcher: leases, lanes, FIFO keys,
paused deliveries, cluster-wide limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from tests.conftest import eventually
from tests.support.queue import claim_all, take_everything
from tests.support.stores import STORES, service_for, settings_for
from tidings.domain.deliveries import AttemptResult, DeliveryStatus, DisableReason, Verdict
from tidings.domain.scheduling import Lane
from tidings.domain.subscriptions import Ordering, Subscription
from tidings.service import Tidings
from tidings.storage import AttemptOutcome, ClaimedDelivery, Store, StoredEvent
from tidings.storage.errors import StorageUnavailable
from tidings.storage.memory import MemoryStore
from tidings.storage.postgres import PostgresDatabase
from tidings.storage.records import ClaimRequest
from tidings.storage.sql import SQLStore

pytestmark = pytest.mark.asyncio

LEASE = 30_000
FAR = 2**50
"""A claim time after everything is due."""


@pytest.fixture(params=STORES)
async def tidings(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Tidings]:
    async with service_for(settings_for(request.param, request, tmp_path)) as service:
        yield service


async def tenant(t: Tidings, name: str = "acme") -> str:
    return (await t.store.keys.ensure_tenant(name)).id


async def subscription(t: Tidings, tenant_id: str, **options: Any) -> Subscription:
    sub, _ = await t.create_subscription(
        tenant_id, "http://127.0.0.1:9/hook", ["client.*"], **options
    )
    return sub


async def emit(t: Tidings, tenant_id: str, key: str | None = None, n: int = 0) -> StoredEvent:
    draft = t.draft_event(tenant_id, "client.created", {"n": n})
    if key is not None:
        from dataclasses import replace

        draft = replace(draft, ordering_key=key)
    stored, _ = await t.store.events.insert_event(draft, None)
    return stored


def plan_of(counts: Mapping[str, int]) -> Any:
    def plan(lanes: Sequence[Lane]) -> Mapping[str, int]:
        return {lane.subscription_id: counts.get(lane.subscription_id, 0) for lane in lanes}

    return plan


def done(
    claimed: ClaimedDelivery, status: int = 200, retry_at: int | None = None
) -> AttemptOutcome:
    result = AttemptResult(status, 3)
    if result.succeeded:
        verdict = Verdict(DeliveryStatus.SUCCEEDED, None)
    elif retry_at is not None:
        verdict = Verdict(DeliveryStatus.PENDING, retry_at)
    else:
        verdict = Verdict(DeliveryStatus.FAILED, None)
    return AttemptOutcome(claimed, result, verdict, int(time.time() * 1000))


def payloads(claimed: Sequence[ClaimedDelivery]) -> list[int]:
    import json

    return sorted(json.loads(c.body)["payload"]["n"] for c in claimed)


async def test_a_claim_leases_and_a_lapsed_lease_is_claimed_again(tidings: Tidings) -> None:
    tid = await tenant(tidings)
    await subscription(tidings, tid)
    await emit(tidings, tid)
    now = int(time.time() * 1000)
    [first] = await claim_all(tidings.store.queue, now)
    assert first.attempt == 1
    assert await claim_all(tidings.store.queue, now + 1) == [], "leased: not due"
    [again] = await claim_all(tidings.store.queue, now + LEASE + 1)
    assert again.delivery_id == first.delivery_id and again.claim_token != first.claim_token
    # The first holder's late record is logged but moves nothing.
    await tidings.store.queue.record([done(first)])
    counts = await tidings.store.queue.delivery_counts()
    assert counts == {DeliveryStatus.PENDING.value: 1}
    await tidings.store.queue.record([done(again)])
    assert await tidings.store.queue.delivery_counts() == {DeliveryStatus.SUCCEEDED.value: 1}


@pytest.mark.parametrize("late_first", [True, False])
async def test_a_late_record_beside_the_current_one_in_a_batch_moves_nothing(
    tidings: Tidings, late_first: bool
) -> None:
    """Both attempts are kept; only the current claim's moves the delivery, whichever
    comes first in the batch (SQLite reads the tokens once for a whole batch)."""
    tid = await tenant(tidings)
    await subscription(tidings, tid)
    await emit(tidings, tid)
    now = int(time.time() * 1000)
    [first] = await claim_all(tidings.store.queue, now)
    [again] = await claim_all(tidings.store.queue, now + LEASE + 1)
    late, current = done(first, 500), done(again)
    await tidings.store.queue.record([late, current] if late_first else [current, late])
    assert await tidings.store.queue.delivery_counts() == {DeliveryStatus.SUCCEEDED.value: 1}
    attempts = await tidings.store.events.event_attempts(tid, first.event_id)
    assert sorted(a.status_code or 0 for a in attempts) == [200, 500]


async def test_lanes_are_offered_least_recently_served_first(tidings: Tidings) -> None:
    tid = await tenant(tidings)
    subs = [await subscription(tidings, tid) for _ in range(3)]
    for n in range(3):
        await emit(tidings, tid, n=n)
    seen: list[list[str]] = []

    def one_from_first(lanes: Sequence[Lane]) -> Mapping[str, int]:
        seen.append([lane.subscription_id for lane in lanes])
        return {lanes[0].subscription_id: 1}

    for _ in range(3):
        await tidings.store.queue.claim(ClaimRequest(FAR, LEASE, one_from_first))
    firsts = [order[0] for order in seen]
    assert sorted(firsts) == sorted(s.id for s in subs), "each lane had its turn first"


async def test_a_claim_takes_what_the_plan_says_and_skips_what_it_is_told(
    tidings: Tidings,
) -> None:
    tid = await tenant(tidings)
    a, b = await subscription(tidings, tid), await subscription(tidings, tid)
    for n in range(5):
        await emit(tidings, tid, n=n)
    claimed = await tidings.store.queue.claim(ClaimRequest(FAR, LEASE, plan_of({a.id: 2})))
    assert [c.subscription_id for c in claimed] == [a.id, a.id]
    offered: list[str] = []

    def note(lanes: Sequence[Lane]) -> Mapping[str, int]:
        offered.extend(lane.subscription_id for lane in lanes)
        return {}

    await tidings.store.queue.claim(ClaimRequest(FAR, LEASE, note, skip=[a.id]))
    assert offered == [b.id]


async def test_fifo_sends_one_per_key_in_order_and_other_keys_flow(tidings: Tidings) -> None:
    tid = await tenant(tidings)
    await subscription(tidings, tid, ordering=Ordering.FIFO)
    for n in range(3):
        await emit(tidings, tid, key="k1", n=n)
    await emit(tidings, tid, key="k2", n=10)
    await emit(tidings, tid, key=None, n=20)
    heads = await claim_all(tidings.store.queue, FAR)
    assert payloads(heads) == [0, 10, 20], "one per key (no key is a key of its own)"
    assert await claim_all(tidings.store.queue, FAR) == []
    k1 = next(c for c in heads if c.ordering_key == "k1")
    # A failed attempt that will be retried holds the key...
    await tidings.store.queue.record([done(k1, 500, retry_at=FAR)])
    assert await claim_all(tidings.store.queue, FAR - 1) == []
    [retry] = await claim_all(tidings.store.queue, FAR)
    assert retry.delivery_id == k1.delivery_id
    # ...until it is delivered or given up: then the next of that key goes.
    await tidings.store.queue.record([done(retry, 500)])
    [second] = await claim_all(tidings.store.queue, FAR)
    assert payloads([second]) == [1]
    await tidings.store.queue.record([done(second)])
    [third] = await claim_all(tidings.store.queue, FAR)
    assert payloads([third]) == [2]


async def test_fifo_redelivery_joins_the_end_of_its_key(tidings: Tidings) -> None:
    tid = await tenant(tidings)
    sub = await subscription(tidings, tid, ordering=Ordering.FIFO)
    first = await emit(tidings, tid, key="k", n=0)
    await emit(tidings, tid, key="k", n=1)
    [head] = await claim_all(tidings.store.queue, FAR)
    await tidings.store.queue.record([done(head)])
    await tidings.store.events.enqueue(first, [sub.id])  # redeliver event 0
    await emit(tidings, tid, key="k", n=2)
    order = []
    for _ in range(3):
        [c] = await claim_all(tidings.store.queue, FAR)
        order += payloads([c])
        await tidings.store.queue.record([done(c)])
    assert order == [1, 0, 2]


async def test_fifo_recovery_joins_the_end_of_its_key(tidings: Tidings) -> None:
    tid = await tenant(tidings)
    await subscription(tidings, tid, ordering=Ordering.FIFO)
    await emit(tidings, tid, key="k", n=0)
    await emit(tidings, tid, key="k", n=1)
    [head] = await claim_all(tidings.store.queue, FAR)
    await tidings.store.queue.record([done(head, 400)])  # given up: failed
    [nxt] = await claim_all(tidings.store.queue, FAR)
    assert payloads([nxt]) == [1]
    assert await tidings.store.reports.recover_failed(tid, 0, None) == 1
    assert await claim_all(tidings.store.queue, FAR) == [], "behind the unfinished one"
    await tidings.store.queue.record([done(nxt)])
    [recovered] = await claim_all(tidings.store.queue, FAR)
    assert payloads([recovered]) == [0] and recovered.attempt == 1


async def test_disabling_pauses_and_enabling_resumes(tidings: Tidings) -> None:
    tid = await tenant(tidings)
    sub = await subscription(tidings, tid)
    await emit(tidings, tid, n=0)
    await tidings.store.subscriptions.disable(tid, sub.id, DisableReason.BREAKER)
    await emit(tidings, tid, n=1)  # matches the disabled subscription: kept for it
    assert await tidings.store.queue.delivery_counts() == {DeliveryStatus.PAUSED.value: 2}
    assert await claim_all(tidings.store.queue, FAR) == []
    await tidings.store.subscriptions.update(tid, sub.id, {"enabled": True})
    resumed = await claim_all(tidings.store.queue, FAR)
    assert payloads(resumed) == [0, 1]
    assert all(c.paused_ms >= 0 and c.window_start_ms >= c.event_created_ms for c in resumed)


async def test_enabling_a_subscription_wakes_every_worker_for_what_it_resumes(
    tidings: Tidings,
) -> None:
    """What waited paused is due the moment its subscription is enabled again: workers,
    in this process and (SQLite, PostgreSQL) in another, are told at once, not at their
    next poll (a second, by default)."""
    from tidings.storage.factory import open_store

    tid = await tenant(tidings)
    sub = await subscription(tidings, tid)
    await tidings.store.subscriptions.disable(tid, sub.id, DisableReason.MANUAL)
    await emit(tidings, tid)
    url = tidings.settings.database_url
    stores = [tidings.store, *([open_store(url)] if url else [])]
    try:
        for store in stores:
            await store.queue.wait_for_work(0.1)  # listening from now on; woken once, to look
            assert not await woken_at_once(store, within=0.3), store
        await tidings.store.subscriptions.update(tid, sub.id, {"enabled": True})
        assert [await woken_at_once(store) for store in stores] == [True] * len(stores)
        assert payloads(await claim_all(stores[-1].queue, FAR)) == [0]
    finally:
        for store in stores[1:]:
            await store.close()


async def test_a_retry_recorded_after_a_disable_waits_paused(tidings: Tidings) -> None:
    tid = await tenant(tidings)
    sub = await subscription(tidings, tid)
    await emit(tidings, tid)
    [claimed] = await claim_all(tidings.store.queue, FAR)
    await tidings.store.subscriptions.update(tid, sub.id, {"enabled": False})
    # The disable took the lease back; the in-flight attempt's record changes nothing.
    await tidings.store.queue.record([done(claimed, 500, retry_at=FAR)])
    assert await tidings.store.queue.delivery_counts() == {DeliveryStatus.PAUSED.value: 1}


async def test_gone_and_deletion_drop_what_was_waiting(tidings: Tidings) -> None:
    tid = await tenant(tidings)
    gone, deleted = await subscription(tidings, tid), await subscription(tidings, tid)
    await tidings.store.subscriptions.disable(tid, gone.id, DisableReason.MANUAL)
    await emit(tidings, tid)
    await tidings.store.subscriptions.update(tid, gone.id, {"enabled": True})
    await tidings.store.subscriptions.disable(tid, gone.id, DisableReason.GONE)
    await tidings.store.subscriptions.delete(tid, deleted.id)
    assert await tidings.store.queue.delivery_counts() == {DeliveryStatus.CANCELLED.value: 2}
    await emit(tidings, tid)
    assert await tidings.store.queue.delivery_counts() == {DeliveryStatus.CANCELLED.value: 2}


async def test_max_concurrency_holds_for_every_worker_together(tidings: Tidings) -> None:
    tid = await tenant(tidings)
    await subscription(tidings, tid, max_concurrency=3)
    for n in range(10):
        await emit(tidings, tid, n=n)
    worker_1 = await claim_all(tidings.store.queue, FAR)
    worker_2 = await claim_all(tidings.store.queue, FAR + 1)
    assert len(worker_1) == 3 and worker_2 == []
    await tidings.store.queue.record([done(worker_1[0])])
    assert len(await claim_all(tidings.store.queue, FAR + 2)) == 1, "one slot freed"


async def test_rate_limit_holds_for_every_worker_together(tidings: Tidings) -> None:
    tid = await tenant(tidings)
    await subscription(tidings, tid, rate_limit=4.0)
    for n in range(20):
        await emit(tidings, tid, n=n)
    start = int(time.time() * 1000) + 1_000
    took = [len(await claim_all(tidings.store.queue, start + step)) for step in (0, 0, 250, 500)]
    assert took == [4, 0, 1, 1], "a second's burst, then the rate, whoever claims"


async def test_repair_lets_go_a_key_whose_head_vanished(tidings: Tidings) -> None:
    tid = await tenant(tidings)
    sub = await subscription(tidings, tid, ordering=Ordering.FIFO)
    await emit(tidings, tid, key="k", n=0)
    await emit(tidings, tid, key="k", n=1)
    await tidings.store.subscriptions.disable(tid, sub.id, DisableReason.MANUAL)
    # Retention prunes the paused head's event (it is old); its successor is stranded.
    await tidings.store.retention.prune_events(before_ms=FAR, batch=1)
    await tidings.store.subscriptions.update(tid, sub.id, {"enabled": True})
    assert await claim_all(tidings.store.queue, FAR) == []
    assert await tidings.store.queue.repair(int(time.time() * 1000)) == 1
    assert payloads(await claim_all(tidings.store.queue, FAR)) == [1]


@pytest.mark.parametrize("asleep", [None, FAR], ids=["idle", "parked"])
async def test_repair_wakes_a_lane_asleep_with_work(tidings: Tidings, asleep: int | None) -> None:
    """On PostgreSQL an emit wakes its lanes just after its commit; if its process dies,
    or the database goes away, in between, the lane sleeps (idle, or parked for later)
    past a due delivery until repair finds it. Every store repairs alike."""
    tid = await tenant(tidings)
    await subscription(tidings, tid)
    await emit(tidings, tid, n=7)
    await put_lanes_to_sleep(tidings.store, asleep)
    now = int(time.time() * 1000)
    assert await claim_all(tidings.store.queue, now + 1000) == []
    assert await tidings.store.queue.repair(now) == 1
    assert payloads(await claim_all(tidings.store.queue, now + 1000)) == [7]
    assert await tidings.store.queue.repair(now) == 0


async def put_lanes_to_sleep(store: Store, until: int | None) -> None:
    """What a lost wake leaves: every lane asleep (``None``) or parked ``until``."""
    if isinstance(store, SQLStore):
        sql = text("UPDATE lanes SET next_due_ms = :until")
        await store.db.write(lambda conn: conn.execute(sql, {"until": until}))
        return
    assert isinstance(store, MemoryStore)
    for lane in store._data.lanes.values():
        lane.next_due_ms = until


async def test_an_emit_whose_wake_fails_is_stored_and_found_by_repair(
    tidings: Tidings, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wake after the commit fails (the connection drops, say): the emit still
    answers with its stored event (a 503 would make the client send it twice), and repair
    wakes the lane."""
    if request.node.callspec.params["tidings"] != "postgresql":
        pytest.skip("only PostgreSQL wakes lanes after the emit's commit")
    from tidings.storage import postgres

    tid = await tenant(tidings)
    await subscription(tidings, tid)
    monkeypatch.setattr(postgres, "_WAKE_AND_NOTIFY", "SELECT no_such_function($1, $2)")
    stored = await emit(tidings, tid, n=3)
    assert stored.seq > 0
    now = int(time.time() * 1000)
    assert await claim_all(tidings.store.queue, now + 1000) == []
    assert await tidings.store.queue.repair(now) == 1
    assert payloads(await claim_all(tidings.store.queue, now + 1000)) == [3]


async def test_a_failed_wake_is_retried_with_the_next_emit(
    tidings: Tidings, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process whose wake failed wakes that lane again with its next emit, whichever
    tenant it is for: no waiting for repair when the database answers again."""
    if request.node.callspec.params["tidings"] != "postgresql":
        pytest.skip("only PostgreSQL wakes lanes after the emit's commit")
    from tidings.storage import postgres

    first, second = await tenant(tidings, "first"), await tenant(tidings, "second")
    await subscription(tidings, first)
    await subscription(tidings, second)
    monkeypatch.setattr(postgres, "_WAKE_AND_NOTIFY", "SELECT no_such_function($1, $2)")
    await emit(tidings, first, n=1)
    monkeypatch.undo()
    await emit(tidings, second, n=2)
    now = int(time.time() * 1000)
    assert payloads(await claim_all(tidings.store.queue, now + 1000)) == [1, 2]


async def test_a_failed_wake_is_retried_in_the_background(
    tidings: Tidings, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No further emit comes (a quiet tenant, another replica's turn): the process retries
    the wake by itself, so the lane does not sleep until a repair."""
    if request.node.callspec.params["tidings"] != "postgresql":
        pytest.skip("only PostgreSQL wakes lanes after the emit's commit")
    from tidings.storage import postgres

    tid = await tenant(tidings)
    await subscription(tidings, tid)
    monkeypatch.setattr(postgres, "WAKE_RETRY_FIRST", 0.1)
    working = postgres._WAKE_AND_NOTIFY
    monkeypatch.setattr(postgres, "_WAKE_AND_NOTIFY", "SELECT no_such_function($1, $2)")
    await emit(tidings, tid, n=5)
    monkeypatch.setattr(postgres, "_WAKE_AND_NOTIFY", working)
    found: list[ClaimedDelivery] = []

    async def claimed() -> bool:
        found.extend(await claim_all(tidings.store.queue, int(time.time() * 1000) + 1000))
        return bool(found)

    await eventually(claimed, timeout=10)
    assert payloads(found) == [5]


@contextlib.asynccontextmanager
async def lane_held(t: Tidings, sub_id: str) -> AsyncIterator[AsyncConnection]:
    """Another worker's claim under way: the lane's row lock held by an open transaction."""
    store = t.store
    assert isinstance(store, SQLStore) and isinstance(store.db, PostgresDatabase)
    async with store.db.engine.begin() as holder:
        lock = "SELECT 1 FROM lanes WHERE subscription_id = :sub FOR UPDATE"
        await holder.execute(text(lock), {"sub": sub_id})
        yield holder


async def test_emits_that_commit_while_a_wake_waits_share_the_next_wake(
    tidings: Tidings, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL wakes lanes in rounds: the emits that commit while one round waits (here
    on a lane a claim holds) are woken together by the next, one statement; each emit
    answers only once its own lanes are woken."""
    if request.node.callspec.params["tidings"] != "postgresql":
        pytest.skip("only PostgreSQL wakes lanes after the emit's commit")
    tenants = [await tenant(tidings, f"t{i}") for i in range(4)]
    subs = [await subscription(tidings, tid) for tid in tenants]
    events = tidings.store.events
    rounds: list[list[str]] = []
    wake = events._wake  # type: ignore[attr-defined]

    async def counted(lanes: list[str]) -> None:
        rounds.append(lanes)
        await wake(lanes)

    monkeypatch.setattr(events, "_wake", counted)

    async def stored(count: int) -> bool:
        found = [await events.list_events(tid, [], None, 1) for tid in tenants]
        return sum(len(page.items) for page in found) == count

    async with lane_held(tidings, subs[0].id):
        first = asyncio.create_task(emit(tidings, tenants[0], n=0))
        await eventually(lambda: stored(1))
        rest = [asyncio.create_task(emit(tidings, tenants[i], n=i)) for i in (1, 2, 3)]
        await eventually(lambda: stored(4))
        assert not first.done() and not any(task.done() for task in rest)
    await asyncio.gather(first, *rest)
    assert rounds == [[subs[0].id], sorted(sub.id for sub in subs[1:])]
    assert payloads(await claim_all(tidings.store.queue, FAR)) == [0, 1, 2, 3]


@contextlib.asynccontextmanager
async def stream_held(t: Tidings, tenant_id: str) -> AsyncIterator[None]:
    """An emit of the tenant under way elsewhere: its stream lock held by an open
    transaction, so that this process's next emit round waits in the database."""
    store = t.store
    assert isinstance(store, SQLStore) and isinstance(store.db, PostgresDatabase)
    async with store.db.engine.begin() as holder:
        lock = "SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"
        await holder.execute(text(lock), {"key": "tidings.events:" + tenant_id})
        yield


async def waiting_for_a_stream_lock(t: Tidings) -> bool:
    assert isinstance(t.store, SQLStore)
    waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    return bool(await t.store.db.read(lambda conn: conn.execute(text(waiting)).scalar_one()))


async def test_emits_asked_for_while_one_runs_go_together_in_order_and_fail_alone(
    tidings: Tidings, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL emits in rounds (group commit): those asked for while a round waits go
    in the next, one statement. FIFO keys keep their emit order across it; an event that
    cannot be stored (an id too long for its column) fails alone, the rest of its round
    are stored."""
    if request.node.callspec.params["tidings"] != "postgresql":
        pytest.skip("only PostgreSQL emits in rounds")
    tid = await tenant(tidings)
    await subscription(tidings, tid, ordering=Ordering.FIFO)
    from tidings.storage import postgres

    events = tidings.store.events
    statements: list[int] = []  # the events of each statement that stored several
    columns = postgres._emit_columns

    def counted(batch: list[tuple[Any, ...]]) -> list[list[Any]]:
        statements.append(len(batch))
        return columns(batch)

    monkeypatch.setattr(postgres, "_emit_columns", counted)
    stray = tidings.draft_event(tid, "client.created", {"n": -1})
    stray = dataclasses.replace(stray, id="evt_" + "x" * 60)
    async with stream_held(tidings, tid):
        first = asyncio.create_task(emit(tidings, tid, key="k", n=0))
        await eventually(lambda: waiting_for_a_stream_lock(tidings))
        rest = [asyncio.create_task(emit(tidings, tid, key="k", n=n)) for n in (1, 2, 3)]
        refused = asyncio.create_task(events.insert_event(stray, None))
        await asyncio.sleep(0)  # all asked for while the first round waits
    stored = await asyncio.gather(first, *rest)
    with pytest.raises(Exception, match="too long"):
        await refused
    assert statements == [4]  # the first alone, the rest in one (then each again alone)
    assert [e.seq for e in stored] == sorted(e.seq for e in stored)
    order = []
    for _ in range(4):  # FIFO: one at a time, in emit order
        claimed = await claim_all(tidings.store.queue, FAR)
        order += payloads(claimed)
        await tidings.store.queue.record([done(c) for c in claimed])
    assert order == [0, 1, 2, 3]


async def test_an_outage_amid_a_round_gone_alone_fails_only_the_events_not_stored(
    tidings: Tidings, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round's statement fails, so its events go again one by one; the connection dies
    on the second (its server process terminated). The first is stored and says so (a
    503 would make its client send it twice); the second and third fail and are not."""
    if request.node.callspec.params["tidings"] != "postgresql":
        pytest.skip("only PostgreSQL emits in rounds")
    from tidings.storage import postgres

    store = tidings.store
    assert isinstance(store, SQLStore)
    dies = """
        CREATE FUNCTION tidings_test_dies_at(p_id text) RETURNS boolean LANGUAGE plpgsql AS $$
        BEGIN
            IF p_id LIKE 'evt_dies%' THEN PERFORM pg_terminate_backend(pg_backend_pid()); END IF;
            RETURN TRUE;
        END $$"""
    await store.db.write(lambda conn: conn.execute(text(dies)))
    monkeypatch.setattr(postgres, "_EMIT_MANY", "SELECT no_such_function()")
    monkeypatch.setattr(postgres, "_EMIT", postgres._EMIT + " WHERE tidings_test_dies_at($1)")
    tid = await tenant(tidings)
    await subscription(tidings, tid)

    def event(n: int, event_id: str | None = None) -> StoredEvent:
        draft = tidings.draft_event(tid, "client.created", {"n": n})
        return draft if event_id is None else dataclasses.replace(draft, id=event_id)

    async with stream_held(tidings, tid):
        first = asyncio.create_task(store.events.insert_event(event(0), None))
        await eventually(lambda: waiting_for_a_stream_lock(tidings))
        round_of_three = [event(1), event(2, "evt_dies_here"), event(3)]
        emits = [asyncio.create_task(store.events.insert_event(e, None)) for e in round_of_three]
        await asyncio.sleep(0)
    await first
    outcomes = await asyncio.gather(*emits, return_exceptions=True)
    assert isinstance(outcomes[0], tuple) and outcomes[0][0].seq > 0
    assert all(isinstance(outcome, StorageUnavailable) for outcome in outcomes[1:])
    listed = await store.events.list_events(tid, [], None, 10)
    assert [json.loads(e.body)["payload"]["n"] for e in listed.items] == [0, 1]


async def test_an_emit_round_cancelled_at_close_ends_every_emit_waiting_for_one(
    tidings: Tidings, request: pytest.FixtureRequest
) -> None:
    """Closing cancels the round under way; the emits queued for the next one end too
    (cancelled), instead of waiting for a round that will not come."""
    if request.node.callspec.params["tidings"] != "postgresql":
        pytest.skip("only PostgreSQL emits in rounds")
    store = tidings.store
    assert isinstance(store, SQLStore) and isinstance(store.db, PostgresDatabase)
    tid = await tenant(tidings)
    await subscription(tidings, tid)
    async with stream_held(tidings, tid):
        under_way = asyncio.create_task(emit(tidings, tid, n=0))
        await eventually(lambda: waiting_for_a_stream_lock(tidings))
        queued = asyncio.create_task(emit(tidings, tid, n=1))
        await asyncio.sleep(0)
        store.db._background["_emit_rounds"].cancel()  # what close does
        async with asyncio.timeout(10):
            ended = await asyncio.gather(under_way, queued, return_exceptions=True)
    assert all(isinstance(outcome, asyncio.CancelledError) for outcome in ended)


async def test_concurrent_emits_and_claims_lose_no_wake_up(tidings: Tidings) -> None:
    """Emits racing claims (and records) must never leave a due delivery behind a
    parked lane: the lane's row lock orders them."""
    tenants = [await tenant(tidings, f"t{i}") for i in range(4)]
    for tid in tenants:
        await subscription(tidings, tid)
    per_tenant = 80
    got: list[ClaimedDelivery] = []
    emitting = len(tenants)

    async def emitter(tid: str, base: int) -> None:
        nonlocal emitting
        for n in range(per_tenant):
            await emit(tidings, tid, n=base + n)
        emitting -= 1

    async def worker() -> None:
        """Claims until the emits are over and a claim finds nothing: a lost wake-up
        (a lane parked although a delivery of it is due) ends it with deliveries left."""
        while True:
            still_emitting = emitting > 0
            claimed = await tidings.store.queue.claim(
                ClaimRequest(int(time.time() * 1000), LEASE, take_everything)
            )
            got.extend(claimed)
            if claimed:
                await tidings.store.queue.record([done(c) for c in claimed])
            elif not still_emitting:
                return

    emitters = [emitter(tid, 1000 * i) for i, tid in enumerate(tenants)]
    async with asyncio.timeout(90):
        await asyncio.gather(*emitters, worker(), worker(), worker())
    expected = sorted(1000 * i + n for i in range(len(tenants)) for n in range(per_tenant))
    assert payloads(got) == expected
    counts = await tidings.store.queue.delivery_counts()
    assert counts == {DeliveryStatus.SUCCEEDED.value: len(expected)}


async def test_queue_state_counts_every_pending_delivery_and_the_oldest_claimable(
    tidings: Tidings,
) -> None:
    """What /metrics reports: leased and FIFO-blocked deliveries are pending; the oldest
    due is the earliest one a claim could take now."""
    tid = await tenant(tidings)
    await subscription(tidings, tid)
    fifo = await subscription(tidings, tid, ordering=Ordering.FIFO)
    await emit(tidings, tid, key="k", n=0)
    await emit(tidings, tid, key="k", n=1)
    emitted = int(time.time() * 1000)
    pending, oldest = await tidings.store.queue.queue_state(FAR)
    assert pending == 4 and oldest is not None and oldest <= emitted
    taken = await claim_all(tidings.store.queue, FAR)
    assert len(taken) == 3, "both plain deliveries and the FIFO key's head"
    assert await tidings.store.queue.queue_state(FAR) == (4, None), "leased, or blocked"
    [head] = [c for c in taken if c.subscription_id == fifo.id]
    await tidings.store.queue.record([done(head)])
    pending, oldest = await tidings.store.queue.queue_state(FAR)
    assert pending == 3 and oldest is not None, "the key's next is let go"


async def test_a_claim_that_finds_its_due_lanes_held_by_another_claim_tries_again_soon(
    tidings: Tidings, request: pytest.FixtureRequest
) -> None:
    """A PostgreSQL claim skips the lanes another worker's claim holds (row locks). A
    worker that found nothing for that reason claims again in a moment, not at the next
    NOTIFY or poll: with a few busy lanes, waiting left every worker but one idle
    through a backlog. Nothing due, it waits as before."""
    if request.node.callspec.params["tidings"] != "postgresql":
        pytest.skip("only PostgreSQL claims skip locked lanes")
    from tidings.storage.factory import open_store

    url = tidings.settings.database_url
    assert url is not None
    other = open_store(url)  # another worker's queue: it never heard of the emit below
    try:
        tid = await tenant(tidings)
        sub = await subscription(tidings, tid)
        await other.queue.wait_for_work(0)  # listens from now on (and wakes once, to look)
        assert await claim_all(other.queue, FAR) == []
        assert not await woken_at_once(other, within=1)

        await emit(tidings, tid)
        assert await woken_at_once(other)  # by the emit's NOTIFY
        assert isinstance(other, SQLStore) and isinstance(other.db, PostgresDatabase)
        async with other.db.engine.begin() as holder:  # another worker's claim, under way
            lock = "SELECT 1 FROM lanes WHERE subscription_id = :sub FOR UPDATE"
            await holder.execute(text(lock), {"sub": sub.id})
            assert await claim_all(other.queue, FAR) == []
            assert await woken_at_once(other)
        assert payloads(await claim_all(other.queue, FAR)) == [0]
    finally:
        await other.close()


async def test_notices_forgotten_before_a_claim_wake_no_one(tidings: Tidings) -> None:
    """``forget_work`` drops the notices of new work so far (the dispatcher calls it as a
    claim starts: that claim finds what they announced); the next notice wakes as ever."""
    queue = tidings.store.queue
    await queue.wait_for_work(0.01)  # PostgreSQL: listening from now on
    assert not queue.forget_work()
    queue.notify_work()
    assert queue.forget_work()
    waiting = asyncio.ensure_future(queue.wait_for_work(60))
    done, _ = await asyncio.wait([waiting], timeout=0.3)
    assert not done, "woken by a notice it was told to forget"
    queue.notify_work()
    await asyncio.wait_for(waiting, 5)


async def test_a_claim_whose_planned_lanes_are_held_takes_from_the_others(
    tidings: Tidings, request: pytest.FixtureRequest
) -> None:
    """A PostgreSQL claim plans from an unlocked look, so its plan may go to lanes another
    worker's claim holds while others wait (every worker sees the same least recently
    served lanes first). It then plans again without them, at once: with many lanes and
    room for few, workers would otherwise crowd the same lanes and take nothing."""
    if request.node.callspec.params["tidings"] != "postgresql":
        pytest.skip("only PostgreSQL claims plan before they lock")
    tid = await tenant(tidings)
    first, second = await subscription(tidings, tid), await subscription(tidings, tid)
    await emit(tidings, tid)
    store = tidings.store
    assert isinstance(store, SQLStore) and isinstance(store.db, PostgresDatabase)

    def one_preferring_first(lanes: Sequence[Lane]) -> Mapping[str, int]:
        offered = [lane.subscription_id for lane in lanes]
        return {first.id if first.id in offered else offered[0]: 1} if offered else {}

    async with store.db.engine.begin() as holder:  # another worker's claim, under way
        lock = "SELECT 1 FROM lanes WHERE subscription_id = :sub FOR UPDATE"
        await holder.execute(text(lock), {"sub": first.id})
        claimed = await store.queue.claim(ClaimRequest(FAR, LEASE, one_preferring_first))
    assert [c.subscription_id for c in claimed] == [second.id]


async def test_a_claim_that_finds_nothing_due_does_not_wake_its_worker(
    tidings: Tidings, request: pytest.FixtureRequest
) -> None:
    """A PostgreSQL claim tells its worker to claim again only when lanes are due but
    held (above): not when nothing is due, and not when its plan wants nothing of the due
    lanes (the worker has no room for them: it would claim again at once, and again).
    Else every drained backlog, and every event of a trickle, would cost it more claims."""
    if request.node.callspec.params["tidings"] != "postgresql":
        pytest.skip("the PostgreSQL claim's wake for held lanes")
    tid = await tenant(tidings)
    await subscription(tidings, tid)
    await emit(tidings, tid)
    queue = tidings.store.queue
    await queue.wait_for_work(0.1)  # the emit's notices, here and by NOTIFY, arrive
    queue.forget_work()
    assert await queue.claim(ClaimRequest(FAR, LEASE, plan_of({}))) == []
    assert not queue.forget_work(), "a claim that wanted nothing woke its own worker"
    assert len(await claim_all(queue, FAR)) == 1
    queue.forget_work()
    assert await claim_all(queue, FAR) == []
    assert not queue.forget_work(), "an empty claim woke its own worker"


async def woken_at_once(store: Store, within: float = 5) -> bool:
    """The store's ``wait_for_work`` returns ``within`` seconds, well before its 60 s."""
    try:
        async with asyncio.timeout(within):
            await store.queue.wait_for_work(60)
    except TimeoutError:
        return False
    return True


async def test_a_success_resets_the_failure_streak_and_failures_count_from_zero_again(
    tidings: Tidings,
) -> None:
    """What the breaker counts is *consecutive* failures: ``record`` returns the streak of
    each failing subscription, and a success in between starts it over. (PostgreSQL
    skips the reset when the record read the streak as 0 already.)"""
    tid = await tenant(tidings)
    await subscription(tidings, tid)
    queue = tidings.store.queue
    for n in range(4):
        await emit(tidings, tid, n=n)
    claimed = sorted(await claim_all(queue, FAR), key=lambda c: c.delivery_id)
    first, second, third, fourth = claimed
    streaks = [
        await queue.record([done(first, 500)]),
        await queue.record([done(second, 500)]),
        await queue.record([done(third)]),
        await queue.record([done(fourth, 500)]),
    ]
    sub_id = first.subscription_id
    assert streaks == [{sub_id: 1}, {sub_id: 2}, {}, {sub_id: 1}]
