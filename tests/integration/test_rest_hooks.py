"""REST Hooks lifecycle, with a receiver that behaves as Zapier's does."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import Api, eventually
from tests.integration.test_delivery import emit
from tests.support.receiver import Receiver

pytestmark = pytest.mark.asyncio


async def test_subscribe_deliver_gone_and_unsubscribe(api: Api, receiver: Receiver) -> None:
    headers = await api.key()
    zap_alive = {"yes": True}
    # Zapier answers 200 while the Zap is on and 410 once it is turned off.
    url = receiver.on("/zap", lambda _: web.Response(status=200 if zap_alive["yes"] else 410))
    created = await api.client.post(
        "/api/v1/hooks",
        json={"target_url": url, "event": "client.created", "zap_id": 123},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    hook_id = created.json()["id"]
    event = await emit(api, headers, "client.created")
    [got] = await receiver.wait_count("/zap", 1)
    assert json.loads(got.body)["id"] == event["id"]

    zap_alive["yes"] = False
    await emit(api, headers, "client.created")
    await receiver.wait_count("/zap", 2)

    async def disabled() -> bool:
        sub = await api.client.get(f"/api/v1/webhooks/subscriptions/{hook_id}", headers=headers)
        return bool(sub.json()["disabledReason"] == "gone")

    await eventually(disabled)
    gone = await api.client.delete(f"/api/v1/hooks/{hook_id}", headers=headers)
    assert gone.status_code == 204
    assert (await api.client.delete(f"/api/v1/hooks/{hook_id}", headers=headers)).status_code == 404


async def test_hook_url_spelling_and_bad_input(api: Api, receiver: Receiver) -> None:
    headers = await api.key()
    ok = await api.client.post(
        "/api/v1/hooks",
        json={"hookUrl": receiver.url("/n8n"), "event": "payment.*"},
        headers=headers,
    )
    assert ok.status_code == 201 and ok.json()["event"] == "payment.*"
    for body in (
        {"event": "client.created"},
        {"hookUrl": "ftp://x", "event": "client.created"},
        {"hookUrl": receiver.url("/x"), "event": "no such!"},
    ):
        response = await api.client.post("/api/v1/hooks", json=body, headers=headers)
        assert response.status_code == 422, body
        assert response.json()["error"]["code"] == "validation_error"
    webhook = await api.client.post(
        "/api/v1/webhooks/subscriptions",
        json={"url": receiver.url("/wh"), "eventTypes": ["*"]},
        headers=headers,
    )
    deleted = await api.client.delete(f"/api/v1/hooks/{webhook.json()['id']}", headers=headers)
    assert deleted.status_code == 404, "only REST hooks are removed through /hooks"


async def test_samples_for_the_perform_list_step(api: Api) -> None:
    headers = await api.key()
    sample = await api.client.get("/api/v1/hooks/samples/lead.created", headers=headers)
    [only] = sample.json()
    assert only["type"] == "lead.created" and only["payload"] and only["metadata"]["sample"]
    emitted: list[dict[str, Any]] = [await emit(api, headers, "lead.created") for _ in range(4)]
    recent = await api.client.get("/api/v1/hooks/samples/Lead.Created", headers=headers)
    assert [e["id"] for e in recent.json()] == [e["id"] for e in reversed(emitted)][:3]
    missing = await api.client.get("/api/v1/hooks/samples/no.such", headers=headers)
    assert missing.status_code == 404
