"""Transformations on real deliveries, on both databases: the dispatcher runs the
subscription's script before signing; what it returns is what is sent and signed; a cancel
or a failing script ends the delivery without a POST, a retry or a breaker count; a
looping script holds up nobody else; saving checks the script; test sends run it."""

from __future__ import annotations

import json
from typing import Any

import pytest
import standardwebhooks

from tests.conftest import Api, eventually
from tests.support.receiver import Receiver

pytestmark = pytest.mark.asyncio

SLACK = """
function handler(webhook) {
  const client = webhook.payload.payload;
  if (client.name === "Skip") { webhook.cancel = true; return webhook; }
  webhook.payload = {text: `New client: ${client.name}`, id: webhook.payload.id};
  return webhook;
}
"""


async def subscribe(api: Api, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = await api.client.post(
        "/api/v1/webhooks/subscriptions",
        json={"eventTypes": ["client.created"], **body},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def emit(api: Api, headers: dict[str, str], name: str) -> str:
    response = await api.client.post(
        "/api/v1/events",
        json={"type": "client.created", "payload": {"name": name}},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def log_of(api: Api, headers: dict[str, str], sub_id: str) -> list[dict[str, Any]]:
    response = await api.client.get(
        f"/api/v1/webhooks/subscriptions/{sub_id}/deliveries", headers=headers
    )
    return response.json()  # type: ignore[no-any-return]


async def logged(api: Api, headers: dict[str, str], sub_id: str, count: int) -> list[Any]:
    found: list[dict[str, Any]] = []

    async def enough() -> bool:
        found[:] = await log_of(api, headers, sub_id)
        return len(found) >= count

    await eventually(enough)
    return found


async def test_the_transformed_payload_is_the_signed_body(api: Api, receiver: Receiver) -> None:
    headers = await api.key()
    sub = await subscribe(api, headers, url=receiver.url("/slack"), transformation=SLACK)
    assert sub["transformation"] == SLACK
    event_id = await emit(api, headers, "Ada")
    [got] = await receiver.wait_count("/slack", 1)
    assert got.body == f'{{"text":"New client: Ada","id":"{event_id}"}}'.encode()
    payload = standardwebhooks.Webhook(sub["signingSecret"]).verify(got.body, got.headers)
    assert payload == {"text": "New client: Ada", "id": event_id}
    [attempt] = await logged(api, headers, sub["id"], 1)
    assert attempt["status"] == "succeeded"


async def test_a_cancel_sends_nothing_and_is_logged_as_cancelled(
    api: Api, receiver: Receiver
) -> None:
    headers = await api.key()
    sub = await subscribe(api, headers, url=receiver.url("/slack"), transformation=SLACK)
    await emit(api, headers, "Skip")
    await emit(api, headers, "Ada")
    await receiver.wait_count("/slack", 1)
    log = await logged(api, headers, sub["id"], 2)
    cancelled = [a for a in log if a["status"] == "cancelled"]
    assert len(cancelled) == 1 and "cancelled by the transformation" in cancelled[0]["error"]
    assert len(receiver.at("/slack")) == 1, "the cancelled event was not sent"
    filtered = await api.client.get(
        f"/api/v1/webhooks/subscriptions/{sub['id']}/deliveries",
        params={"status": "cancelled"},
        headers=headers,
    )
    assert [a["id"] for a in filtered.json()] == [cancelled[0]["id"]]


async def test_a_failing_script_fails_the_delivery_once_without_the_breaker(
    start_api: Any, receiver: Receiver
) -> None:
    async with start_api(breaker_threshold=2) as api:
        headers = await api.key()
        script = "function handler(webhook) {\n  return webhook.payload.payload.missing.x;\n}"
        sub = await subscribe(api, headers, url=receiver.url("/broken"), transformation=script)
        for n in range(3):
            await emit(api, headers, f"client {n}")
        log = await logged(api, headers, sub["id"], 3)
        assert {a["status"] for a in log} == {"failed"}
        assert all(a["error"].startswith("transformation: ") for a in log)
        assert all("line 2" in a["error"] for a in log), log[0]["error"]
        assert [a["attempt"] for a in log] == [1, 1, 1], "not retried"
        state = (
            await api.client.get(f"/api/v1/webhooks/subscriptions/{sub['id']}", headers=headers)
        ).json()
        assert (state["enabled"], state["consecutiveFailures"]) == (True, 0)
        assert receiver.at("/broken") == []


async def test_a_looping_script_holds_up_no_other_subscription(
    api: Api, receiver: Receiver
) -> None:
    headers = await api.key()
    loop = await subscribe(
        api,
        headers,
        url=receiver.url("/loop"),
        transformation="function handler(webhook) { while (true) {} }",
    )
    await subscribe(api, headers, url=receiver.url("/plain"))
    for n in range(5):
        await emit(api, headers, f"client {n}")
    await receiver.wait_count("/plain", 5)
    log = await logged(api, headers, loop["id"], 5)
    assert {a["status"] for a in log} == {"failed"}
    assert all("time" in a["error"] for a in log), log[0]["error"]
    assert receiver.at("/loop") == []


async def test_a_url_the_script_sets_is_where_it_goes_and_is_checked(
    api: Api, receiver: Receiver
) -> None:
    headers = await api.key()
    moved = receiver.url("/moved")
    redirect = f'function handler(webhook) {{ webhook.url = "{moved}"; return webhook; }}'
    await subscribe(api, headers, url=receiver.url("/original"), transformation=redirect)
    bad = 'function handler(webhook) { webhook.url = "ftp://files.example/x"; return webhook; }'
    refused = await subscribe(api, headers, url=receiver.url("/original"), transformation=bad)
    await emit(api, headers, "Ada")
    await receiver.wait_count("/moved", 1)
    [attempt] = await logged(api, headers, refused["id"], 1)
    assert attempt["status"] == "failed" and "the url it set" in attempt["error"]
    assert receiver.at("/original") == []


async def test_saving_checks_the_script(api: Api) -> None:
    headers = await api.key()
    response = await api.client.post(
        "/api/v1/webhooks/subscriptions",
        json={
            "url": "http://127.0.0.1:9/x",
            "eventTypes": ["client.created"],
            "transformation": "function handler(webhook) {\n  return webhook;;\n  }}",
        },
        headers=headers,
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "transformation_failed"
    assert error["details"][0]["field"] == "transformation"
    assert error["details"][0]["line"] == 3
    sub = await subscribe(api, headers, url="http://127.0.0.1:9/x", transformation=SLACK)
    removed = await api.client.patch(
        f"/api/v1/webhooks/subscriptions/{sub['id']}",
        json={"transformation": None},
        headers=headers,
    )
    assert removed.status_code == 200 and removed.json()["transformation"] is None
    listed = await api.client.get("/api/v1/webhooks/subscriptions", headers=headers)
    assert [s["transformation"] for s in listed.json()] == [None]


async def test_a_test_send_runs_the_transformation(api: Api, receiver: Receiver) -> None:
    """On the catalog's sample (its ``firstName``), as a delivery would."""
    headers = await api.key()
    greet = (
        "function handler(webhook) {\n"
        "  const p = webhook.payload;\n"
        "  if (p.payload.firstName === 'Nobody') { webhook.cancel = true; return webhook; }\n"
        "  webhook.payload = {text: `${webhook.eventType}: ${p.payload.firstName}`};\n"
        "  return webhook;\n"
        "}"
    )
    sub = await subscribe(api, headers, url=receiver.url("/slack"), transformation=greet)
    response = await api.client.post(
        f"/api/v1/webhooks/subscriptions/{sub['id']}/test",
        json={"eventType": "client.created"},
        headers=headers,
    )
    assert response.status_code == 200 and response.json()["success"], response.text
    [got] = await receiver.wait_count("/slack", 1)
    assert json.loads(got.body)["text"].startswith("client.created: ")
    cancel_all = "function handler(webhook) { webhook.cancel = true; return webhook; }"
    patched = await api.client.patch(
        f"/api/v1/webhooks/subscriptions/{sub['id']}",
        json={"transformation": cancel_all},
        headers=headers,
    )
    assert patched.status_code == 200, patched.text
    cancelled = await api.client.post(
        f"/api/v1/webhooks/subscriptions/{sub['id']}/test",
        json={"eventType": "client.created"},
        headers=headers,
    )
    assert cancelled.json()["error"] == "cancelled by the transformation"
    assert not cancelled.json()["success"]
    assert len(receiver.at("/slack")) == 1, "a test send's cancel is not sent"
