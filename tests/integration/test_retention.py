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
    async with start_api() as api:
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
        assert pruned.events == 5
        assert (await api.client.get("/api/v1/events", headers=headers)).json() == []
        for event in delivered:
            gone = await api.client.get(f"/api/v1/events/{event['id']}", headers=headers)
            assert gone.status_code == 404


async def test_events_with_pending_deliveries_are_kept(start_api: Any) -> None:
    async with start_api(dispatcher=False) as api:
        headers = await api.key()
        await subscribe(api, headers, "http://127.0.0.1:9/never", "client.created")
        pending = await emit(api, headers, "client.created")
        unrouted = await emit(api, headers, "note.created")
        pruned = await prune_once(
            api.tidings.store.retention, 1, 1, batch=10, now_ms=TWO_DAYS_LATER
        )
        assert pruned.events == 1
        listed = (await api.client.get("/api/v1/events", headers=headers)).json()
        assert [e["id"] for e in listed] == [pending["id"]]
        assert unrouted["id"] not in {e["id"] for e in listed}
