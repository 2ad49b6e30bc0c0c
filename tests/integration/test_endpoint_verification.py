"""endpoint.verify: a subscription is enabled only once its endpoint answers 2xx."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web

from tests.support.receiver import Receiver
from tidings.receiver import verify

pytestmark = pytest.mark.asyncio


async def test_created_disabled_until_the_endpoint_answers(
    start_api: Any, receiver: Receiver
) -> None:
    answers = {"status": 503}
    url = receiver.on("/v", lambda _: web.Response(status=answers["status"]))
    async with start_api(verify_endpoints=True) as api:
        headers = await api.key()
        created = await api.client.post(
            "/api/v1/webhooks/subscriptions",
            json={"url": url, "eventTypes": ["client.created"]},
            headers=headers,
        )
        sub = created.json()
        assert created.status_code == 201
        assert (sub["enabled"], sub["disabledReason"]) == (False, "unverified")
        assert sub["verification"]["success"] is False
        assert sub["verification"]["statusCode"] == 503
        [challenge] = receiver.at("/v")
        verify(sub["signingSecret"], challenge.headers, challenge.body)
        envelope = json.loads(challenge.body)
        assert envelope["type"] == "endpoint.verify"
        assert envelope["payload"]["subscriptionId"] == sub["id"]
        assert envelope["payload"]["challenge"]

        answers["status"] = 200
        again = await api.client.post(
            f"/api/v1/webhooks/subscriptions/{sub['id']}/verify", headers=headers
        )
        assert again.json()["enabled"] is True and again.json()["verification"]["success"]

        moved = receiver.on("/moved", lambda _: web.Response(status=500))
        patched = await api.client.patch(
            f"/api/v1/webhooks/subscriptions/{sub['id']}", json={"url": moved}, headers=headers
        )
        assert patched.status_code == 200
        assert (patched.json()["enabled"], patched.json()["disabledReason"]) == (
            False,
            "unverified",
        )
        assert len(receiver.at("/moved")) == 1


async def test_verification_can_be_asked_per_subscription(api: Any, receiver: Receiver) -> None:
    headers = await api.key()
    created = await api.client.post(
        "/api/v1/webhooks/subscriptions",
        json={"url": receiver.url("/ok"), "eventTypes": ["*"], "verifyEndpoint": True},
        headers=headers,
    )
    body = created.json()
    assert body["enabled"] is True and body["verification"]["success"] is True
    plain = await api.client.post(
        "/api/v1/webhooks/subscriptions",
        json={"url": receiver.url("/plain"), "eventTypes": ["*"]},
        headers=headers,
    )
    assert plain.json()["verification"] is None and receiver.at("/plain") == []
