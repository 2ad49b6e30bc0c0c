"""Through the API, with the real dispatcher and receiver: FIFO keys, paused deliveries
(the breaker's recovery path), and the scheduler's figures in /metrics and the portal."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import Api, eventually
from tests.integration.test_delivery import subscribe, subscription
from tests.support.receiver import Receiver

pytestmark = pytest.mark.asyncio


async def emit(
    api: Api, headers: dict[str, str], n: int, key: str | None = None, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "client.created", "payload": {"n": n}, **extra}
    if key is not None:
        body["orderingKey"] = key
    response = await api.client.post("/api/v1/events", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def numbers(receiver: Receiver, path: str) -> list[int]:
    return [json.loads(r.body)["payload"]["n"] for r in receiver.at(path)]


async def test_fifo_keys_arrive_one_at_a_time_in_emit_order(
    start_api: Any, receiver: Receiver
) -> None:
    async with start_api(retry_base_delay=0.05, retry_max_attempts=10) as api:
        headers = await api.key()

        def every_third_fails(count: int) -> web.Response:
            return web.Response(status=500 if count % 3 == 1 else 200)

        url = receiver.on("/fifo", every_third_fails)
        created = await api.client.post(
            "/api/v1/webhooks/subscriptions",
            json={"url": url, "eventTypes": ["client.*"], "ordering": "fifo"},
            headers=headers,
        )
        assert created.status_code == 201 and created.json()["ordering"] == "fifo"
        for n in range(24):
            await emit(api, headers, n, key=f"key-{n % 3}")
        await receiver.wait_for(lambda: len(set(numbers(receiver, "/fifo"))) == 24, timeout=30)
    seen = numbers(receiver, "/fifo")
    for k in range(3):
        mine = [n for n in seen if n % 3 == k]
        assert mine == sorted(mine), f"key-{k} out of order: {mine}"
        assert sorted(set(mine)) == list(range(k, 24, 3))


async def test_ordering_key_is_stored_not_delivered_and_bounded(
    api: Api, receiver: Receiver
) -> None:
    headers = await api.key()
    await subscribe(api, headers, receiver.url("/plain"))
    event = await emit(api, headers, 1, key="cli_42")
    assert "orderingKey" not in event
    [got] = await receiver.wait_count("/plain", 1)
    assert b"cli_42" not in got.body
    too_long = {"type": "client.created", "payload": {}, "orderingKey": "k" * 257}
    response = await api.client.post("/api/v1/events", json=too_long, headers=headers)
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "body.orderingKey"


async def test_ordering_can_be_set_and_cleared(api: Api, receiver: Receiver) -> None:
    headers = await api.key()
    sub = await subscribe(api, headers, receiver.url("/x"))
    assert sub["ordering"] is None
    path = f"/api/v1/webhooks/subscriptions/{sub['id']}"
    changed = await api.client.patch(path, json={"ordering": "fifo"}, headers=headers)
    assert changed.json()["ordering"] == "fifo"
    cleared = await api.client.patch(path, json={"ordering": None}, headers=headers)
    assert cleared.json()["ordering"] is None
    bad = await api.client.patch(path, json={"ordering": "lifo"}, headers=headers)
    assert bad.status_code == 422


async def test_nothing_is_lost_across_a_breaker_trip(start_api: Any, receiver: Receiver) -> None:
    """The receiver fails until the breaker disables the subscription; events keep coming
    while it is disabled; once it is fixed and enabled again, every event arrives (the
    scenario that lost 12 of 15 events before deliveries were paused, not cancelled)."""
    broken = True

    def answer(_: int) -> web.Response:
        return web.Response(status=500 if broken else 200)

    async with start_api(breaker_threshold=3, retry_max_attempts=20) as api:
        headers = await api.key()
        url = receiver.on("/recovering", answer)
        sub = await subscribe(api, headers, url, "client.created")
        for n in range(5):
            await emit(api, headers, n)

        async def tripped() -> bool:
            return not (await subscription(api, headers, sub["id"]))["enabled"]

        await eventually(tripped)
        for n in range(5, 15):
            await emit(api, headers, n)
        counts = await api.tidings.store.queue.delivery_counts()
        assert counts.get("paused") == 15, counts
        broken = False
        enabled = await api.client.patch(
            f"/api/v1/webhooks/subscriptions/{sub['id']}", json={"enabled": True}, headers=headers
        )
        assert enabled.status_code == 200
        await receiver.wait_for(
            lambda: set(numbers(receiver, "/recovering")) >= set(range(15)), timeout=30
        )

        async def all_delivered() -> bool:
            counts = await api.tidings.store.queue.delivery_counts()
            return bool(counts == {"succeeded": 15})

        await eventually(all_delivered)


async def test_metrics_and_portal_show_who_is_waiting(start_api: Any, receiver: Receiver) -> None:
    async with start_api(dispatcher=False) as api:
        headers = await api.key()
        sub = await subscribe(api, headers, receiver.url("/later"))
        for n in range(7):
            await emit(api, headers, n)
        metrics = (await api.client.get("/metrics")).text
        line = f'tidings_subscription_backlog{{subscription_id="{sub["id"]}"'
        [found] = [x for x in metrics.splitlines() if x.startswith(line)]
        assert found.endswith(" 7.0")
        await api.client.post("/portal/login", data={"api_key": headers["X-Api-Key"]})
        page = (await api.client.get(f"/portal/subscriptions/{sub['id']}")).text
        assert '<span class="figure" id="backlog">7</span>' in page
