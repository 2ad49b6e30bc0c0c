"""Retention prunes old events and response bodies in batches, never pending work."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.conftest import eventually
from tests.integration.test_delivery import attempts_for, emit, subscribe
from tests.support.receiver import Receiver
from tidings.dispatcher.retention import DAY_MS, prune_once

pytestmark = pytest.mark.asyncio

TWO_DAYS_LATER = int(time.time() * 1000) + 2 * DAY_MS


async def test_prunes_bodies_then_events_in_batches(start_api: Any, receiver: Receiver) -> None:
    """On PostgreSQL the 5 events fill one partition (5 keys) and go with it, whole."""
    async with start_api(partition_rows=5) as api:
        headers = await api.key()
        await subscribe(api, headers, receiver.url("/ok"), "client.created")
        delivered = [await emit(api, headers) for _ in range(5)]

        async def all_logged() -> bool:
            logs = [await attempts_for(api, headers, e["id"]) for e in delivered]
            return all(log and log[-1]["status"] == "succeeded" for log in logs)

        await eventually(all_logged)
        assert (await attempts_for(api, headers, delivered[0]["id"]))[0]["responseBody"] == "ok"

        store = api.tidings.store
        bodies = await prune_once(store.retention, 30, 1, batch=2, now_ms=TWO_DAYS_LATER)
        assert (bodies.events, bodies.bodies) == (0, 5)
        [attempt] = await attempts_for(api, headers, delivered[0]["id"])
        assert attempt["responseBody"] == "" and attempt["statusCode"] == 200

        pruned = await prune_once(store.retention, 1, 1, batch=2, now_ms=TWO_DAYS_LATER)
        if api.tidings.settings.resolved_database_url.startswith("sqlite"):
            assert (pruned.events, pruned.partitions) == (5, 0)
        else:  # events, deliveries and attempts: each [1, 6), whole
            assert pruned.events == 0 and pruned.partitions >= 3
        assert (await api.client.get("/api/v1/events", headers=headers)).json() == []
        for event in delivered:
            gone = await api.client.get(f"/api/v1/events/{event['id']}", headers=headers)
            assert gone.status_code == 404


async def test_events_with_pending_deliveries_are_kept_and_paused_ones_do_not_keep_theirs(
    start_api: Any,
) -> None:
    """Paused deliveries go with their events past retention (the README: that bounds what
    a long-disabled subscription accumulates). On PostgreSQL (a partition per 3 keys) the
    pending event's partition stays and its other old events are deleted as rows; the
    next partition goes whole."""
    async with start_api(dispatcher=False, partition_rows=3) as api:
        headers = await api.key()
        await subscribe(api, headers, "http://127.0.0.1:9/never", "client.created")
        paused = await subscribe(api, headers, "http://127.0.0.1:9/off", "lead.created")
        path = f"/api/v1/webhooks/subscriptions/{paused['id']}"
        off = await api.client.patch(path, json={"enabled": False}, headers=headers)
        assert off.status_code == 200
        pending = await emit(api, headers, "client.created")
        waiting = await emit(api, headers, "lead.created")
        unrouted = [await emit(api, headers, "note.created") for _ in range(4)]
        await api.tidings.store.retention.prepare_partitions(3)
        pruned = await prune_once(
            api.tidings.store.retention, 1, 1, batch=10, now_ms=TWO_DAYS_LATER
        )
        listed = (await api.client.get("/api/v1/events", headers=headers)).json()
        assert [e["id"] for e in listed] == [pending["id"]]
        assert not {e["id"] for e in [waiting, *unrouted]} & {e["id"] for e in listed}
        if api.tidings.settings.resolved_database_url.startswith("sqlite"):
            assert (pruned.events, pruned.partitions) == (5, 0)
        else:  # events 2 and 3 as rows; events [4, 7) whole
            assert pruned.events == 2 and pruned.partitions >= 1
