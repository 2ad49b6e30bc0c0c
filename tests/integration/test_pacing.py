"""One slow receiver cannot starve the rest; a rate limit spaces deliveries out."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from tests.integration.test_delivery import emit, subscribe
from tests.support.receiver import Receiver

pytestmark = pytest.mark.asyncio


async def test_slow_subscription_is_capped_and_does_not_block_others(
    start_api: Any, receiver: Receiver
) -> None:
    release = asyncio.Event()
    in_flight = 0
    peak = 0

    async def slow(_: int) -> web.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await release.wait()
        in_flight -= 1
        return web.Response(status=200)

    async with start_api(dispatcher_batch_size=50) as api:
        headers = await api.key()
        slow_url = receiver.on("/slow", slow)
        created = await api.client.post(
            "/api/v1/webhooks/subscriptions",
            json={"url": slow_url, "eventTypes": ["*"], "maxConcurrency": 2},
            headers=headers,
        )
        assert created.json()["maxConcurrency"] == 2
        await subscribe(api, headers, receiver.url("/fast"))
        for _ in range(30):
            await emit(api, headers)
        # Every event reaches the fast receiver while the slow one holds its requests.
        await receiver.wait_count("/fast", 30)
        assert len(receiver.at("/slow")) == 2
        release.set()
        await receiver.wait_count("/slow", 30)
        assert peak == 2


async def test_rate_limit_spaces_deliveries(api: Any, receiver: Receiver) -> None:
    headers = await api.key()
    created = await api.client.post(
        "/api/v1/webhooks/subscriptions",
        json={"url": receiver.url("/paced"), "eventTypes": ["*"], "rateLimit": 5},
        headers=headers,
    )
    assert created.status_code == 201
    for _ in range(10):
        await emit(api, headers)
    got = await receiver.wait_count("/paced", 10)
    # A burst of 5, then 5 per second: the last five need about a second more (unlimited,
    # all ten arrive within milliseconds; the margin is for a loaded machine's jitter).
    assert got[-1].at - got[0].at >= 0.75
    assert len({r.headers["X-Webhook-Id"] for r in got}) == 10
