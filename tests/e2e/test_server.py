"""The real server (uvicorn on a real port) and a real receiver on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from tests.support.receiver import Receiver
from tests.support.snippets import python_verifier

pytestmark = pytest.mark.asyncio


def seed_docs_verify(secret: str, headers: dict[str, str], raw_body: bytes) -> bool:
    """The seed docs' receiver: HMAC of "{timestamp}.{raw_body}", sha256= prefix (the
    ``hmac`` snippet the portal shows)."""
    verify_signature = python_verifier("hmac")
    timestamp, signature = headers["X-Webhook-Timestamp"], headers["X-Webhook-Signature"]
    return verify_signature(raw_body, timestamp, signature, secret)


async def test_emit_deliver_verify_poll(
    server: tuple[str, str], receiver: Receiver, tmp_path: Path
) -> None:
    base, key = server
    headers = {"X-Api-Key": key}
    async with httpx.AsyncClient(base_url=base, headers=headers) as client:
        created = await client.post(
            "/api/v1/webhooks/subscriptions",
            json={"url": receiver.url("/hook"), "eventTypes": ["client.created"]},
        )
        assert created.status_code == 201, created.text
        secret = created.json()["signingSecret"]
        emitted = await client.post(
            "/api/v1/events",
            json={"type": "client.created", "payload": {"clientId": "cli_1", "name": "Ada"}},
        )
        assert emitted.status_code == 201
        event: dict[str, Any] = emitted.json()

        [got] = await receiver.wait_count("/hook", 1)
        assert seed_docs_verify(secret, got.headers, got.body)
        assert Webhook(secret).verify(got.body, got.headers)["id"] == event["id"]
        assert got.headers["X-Webhook-Id"] == event["id"]

        polled = await client.get("/api/v1/events", params={"type": "client.created"})
        assert [e["id"] for e in polled.json()] == [event["id"]]
        assert polled.json()[0] == event

        spec = (await client.get("/openapi.json")).json()
        assert spec["info"]["title"] == "tidings"
    server_log = (tmp_path / "server.log").read_text()  # the fixture's log of this server
    assert secret not in server_log and secret.removeprefix("whsec_") not in server_log
    assert key not in server_log
