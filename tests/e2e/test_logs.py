"""The server's structured logs: JSON lines naming events and subscriptions, no secrets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from tests.conftest import eventually
from tests.support.processes import create_key, serve_on_free_port, tidings_env, wait_until_serving
from tests.support.receiver import Receiver

pytestmark = pytest.mark.asyncio


def json_lines(log: Path) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


async def test_attempts_are_logged_as_json_with_ids_and_without_secrets(
    tmp_path: Path, receiver: Receiver
) -> None:
    env = tidings_env(tmp_path / "data", TIDINGS_LOG_FORMAT="json", TIDINGS_LOG_LEVEL="debug")
    env["TIDINGS_RETRY_MAX_ATTEMPTS"] = "2"
    key = create_key(env)
    base, process = serve_on_free_port(env, tmp_path / "server.log")
    url = receiver.on("/logs", lambda n: web.Response(status=500, text="secret-free failure"))
    try:
        await wait_until_serving(base, process)
        async with httpx.AsyncClient(base_url=base, headers={"X-Api-Key": key}) as client:
            created = await client.post(
                "/api/v1/webhooks/subscriptions", json={"url": url, "eventTypes": ["*"]}
            )
            sub = created.json()
            event = (
                await client.post("/api/v1/events", json={"type": "lead.created", "payload": {}})
            ).json()
            await receiver.wait_count("/logs", 2)

            async def gave_up() -> bool:
                return any(e["event"] == "delivery_failed" for e in json_lines(process.log))

            await eventually(gave_up)
    finally:
        process.stop()

    entries = json_lines(process.log)
    by_name = {e["event"]: e for e in entries}
    assert by_name["event_emitted"]["event_id"] == event["id"]
    for name, level in (("attempt_failed", "info"), ("delivery_failed", "warning")):
        entry = by_name[name]
        assert (entry["event_id"], entry["subscription_id"]) == (event["id"], sub["id"])
        assert entry["status_code"] == 500 and entry["level"] == level
        assert entry["timestamp"].endswith("Z")
    text = process.log.read_text()
    assert sub["signingSecret"] not in text
    assert sub["signingSecret"].removeprefix("whsec_") not in text
    assert key not in text
