"""Delivery through the in-process dispatcher to a real receiver on 127.0.0.1."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import Api, eventually
from tests.support.queue import claim_all
from tests.support.receiver import Receiver
from tidings.receiver import verify

pytestmark = pytest.mark.asyncio


async def subscribe(api: Api, headers: dict[str, str], url: str, *types: str) -> dict[str, Any]:
    response = await api.client.post(
        "/api/v1/webhooks/subscriptions",
        json={"url": url, "eventTypes": list(types) or ["*"]},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def emit(api: Api, headers: dict[str, str], type_: str = "client.created") -> dict[str, Any]:
    response = await api.client.post(
        "/api/v1/events", json={"type": type_, "payload": {"name": "Ada"}}, headers=headers
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def attempts_for(api: Api, headers: dict[str, str], event_id: str) -> list[dict[str, Any]]:
    response = await api.client.get(f"/api/v1/events/{event_id}/deliveries", headers=headers)
    return response.json()  # type: ignore[no-any-return]


async def subscription(api: Api, headers: dict[str, str], sub_id: str) -> dict[str, Any]:
    response = await api.client.get(f"/api/v1/webhooks/subscriptions/{sub_id}", headers=headers)
    return response.json()  # type: ignore[no-any-return]


def fail_times(n: int, status: int = 500) -> Any:
    def respond(count: int) -> web.Response:
        return web.Response(status=status if count <= n else 200, text=f"try {count}")

    return respond


async def test_matching_subscriptions_get_signed_envelope(api: Api, receiver: Receiver) -> None:
    headers = await api.key()
    clients = await subscribe(api, headers, receiver.url("/clients"), "client.*")
    await subscribe(api, headers, receiver.url("/payments"), "payment.succeeded")
    event = await emit(api, headers, "client.created")
    [got] = await receiver.wait_count("/clients", 1)
    assert (
        got.body == (await api.client.get(f"/api/v1/events/{event['id']}", headers=headers)).content
    )
    assert got.headers["X-Webhook-Id"] == got.headers["webhook-id"] == event["id"]
    assert got.headers["Content-Type"] == "application/json"
    verify(clients["signingSecret"], got.headers, got.body)
    await eventually(lambda: _delivered(api, headers, event["id"], 1))
    assert receiver.at("/payments") == []


async def _delivered(api: Api, headers: dict[str, str], event_id: str, count: int) -> bool:
    found = await attempts_for(api, headers, event_id)
    return sum(1 for a in found if a["status"] == "succeeded") >= count


async def test_failures_are_retried_until_success(api: Api, receiver: Receiver) -> None:
    headers = await api.key()
    url = receiver.on("/flaky", fail_times(3))
    sub = await subscribe(api, headers, url)
    event = await emit(api, headers)
    received = await receiver.wait_count("/flaky", 4)
    assert len({r.body for r in received}) == 1, "every attempt carries the same envelope"
    await eventually(lambda: _delivered(api, headers, event["id"], 1))
    log = await attempts_for(api, headers, event["id"])
    assert [a["attempt"] for a in log] == [1, 2, 3, 4]
    assert [a["statusCode"] for a in log] == [500, 500, 500, 200]
    assert [a["status"] for a in log] == ["failed"] * 3 + ["succeeded"]
    assert log[0]["responseBody"] == "try 1" and log[0]["subscriptionId"] == sub["id"]
    assert all(a["elapsedMs"] >= 0 for a in log)
    assert (await subscription(api, headers, sub["id"]))["consecutiveFailures"] == 0


async def test_retries_stop_at_max_attempts(start_api: Any, receiver: Receiver) -> None:
    async with start_api(retry_max_attempts=3) as api:
        headers = await api.key()
        url = receiver.on("/down", fail_times(100, 503))
        await subscribe(api, headers, url)
        event = await emit(api, headers)
        await receiver.wait_count("/down", 3)

        async def three_logged() -> bool:
            return len(await attempts_for(api, headers, event["id"])) == 3

        await eventually(three_logged)
        # The delivery is finished (failed): nothing is due, so no fourth attempt comes.
        rows = await claim_all(api.tidings.store.queue, 2**62)
        assert rows == []


async def test_gone_disables_the_subscription(api: Api, receiver: Receiver) -> None:
    headers = await api.key()
    url = receiver.on("/gone", fail_times(100, 410))
    sub = await subscribe(api, headers, url, "client.created")
    watcher = await subscribe(api, headers, receiver.url("/ops"), "subscription.disabled")
    await emit(api, headers)
    await receiver.wait_count("/gone", 1)
    [notice] = await receiver.wait_count("/ops", 1)
    verify(watcher["signingSecret"], notice.headers, notice.body)
    assert b'"reason":"gone"' in notice.body
    state = await subscription(api, headers, sub["id"])
    assert (state["enabled"], state["disabledReason"]) == (False, "gone")
    await emit(api, headers)
    await emit(api, headers, "subscription.disabled")  # a marker that must reach /ops
    await receiver.wait_count("/ops", 2)
    assert len(receiver.at("/gone")) == 1, "a disabled subscription gets nothing more"


async def test_breaker_trips_after_consecutive_failures(start_api: Any, receiver: Receiver) -> None:
    async with start_api(retry_max_attempts=11, breaker_threshold=20) as api:
        headers = await api.key()
        url = receiver.on("/broken", fail_times(10_000))
        sub = await subscribe(api, headers, url, "client.created")
        await subscribe(api, headers, receiver.url("/ops"), "subscription.disabled")
        await emit(api, headers)
        await emit(api, headers)
        [notice] = await receiver.wait_count("/ops", 1)
        assert b'"reason":"breaker"' in notice.body
        # Two deliveries fail side by side, so the streak seen at the trip is 20 or 21.
        streak = json.loads(notice.body)["payload"]["consecutiveFailures"]
        assert streak in (20, 21)
        state = await subscription(api, headers, sub["id"])
        assert (state["enabled"], state["disabledReason"]) == (False, "breaker")
        assert 20 <= len(receiver.at("/broken")) <= 22
        # Re-enabling by PATCH resets the breaker.
        enabled = await api.client.patch(
            f"/api/v1/webhooks/subscriptions/{sub['id']}", json={"enabled": True}, headers=headers
        )
        assert enabled.json()["consecutiveFailures"] == 0 and enabled.json()["enabled"]


async def test_response_body_is_truncated_and_redirects_fail(api: Api, receiver: Receiver) -> None:
    headers = await api.key()
    big = receiver.on("/big", lambda _: web.Response(status=200, text="x" * 10_000))
    moved = receiver.on(
        "/moved",
        lambda _: web.Response(status=302, headers={"Location": receiver.url("/big")}),
    )
    await subscribe(api, headers, big, "client.created")
    await subscribe(api, headers, moved, "client.created")
    event = await emit(api, headers)
    await receiver.wait_count("/moved", 2)

    async def logged() -> bool:
        found = await attempts_for(api, headers, event["id"])
        return len(found) >= 3

    await eventually(logged)
    log = await attempts_for(api, headers, event["id"])
    big_attempts = [a for a in log if a["statusCode"] == 200]
    assert len(big_attempts) == 1, "the redirect was not followed to /big"
    assert len(big_attempts[0]["responseBody"]) == 4000
    redirects = [a for a in log if a["statusCode"] == 302]
    assert redirects and all(a["status"] == "failed" for a in redirects)
    assert "redirect" in redirects[0]["error"]


async def test_retry_after_is_honoured(start_api: Any, receiver: Receiver) -> None:
    async with start_api(retry_base_delay=30) as api:
        headers = await api.key()
        url = receiver.on(
            "/busy",
            lambda n: (
                web.Response(status=429, headers={"Retry-After": "0"})
                if n == 1
                else web.Response(status=200)
            ),
        )
        await subscribe(api, headers, url)
        await emit(api, headers)
        # With a 30 s backoff the second try only comes this soon because of Retry-After.
        await receiver.wait_count("/busy", 2, timeout=10)


async def test_redeliver_queues_the_event_again(api: Api, receiver: Receiver) -> None:
    headers = await api.key()
    sub = await subscribe(api, headers, receiver.url("/again"), "client.created")
    event = await emit(api, headers)
    await receiver.wait_count("/again", 1)
    response = await api.client.post(
        f"/api/v1/events/{event['id']}/redeliver",
        json={"subscriptionId": sub["id"]},
        headers=headers,
    )
    assert response.status_code == 202
    assert response.json()["subscriptionIds"] == [sub["id"]]
    received = await receiver.wait_count("/again", 2)
    assert received[0].body == received[1].body
    everyone = await api.client.post(f"/api/v1/events/{event['id']}/redeliver", headers=headers)
    assert everyone.json()["subscriptionIds"] == [sub["id"]]
    await receiver.wait_count("/again", 3)


async def test_test_endpoint_reports_the_receivers_answer(api: Api, receiver: Receiver) -> None:
    headers = await api.key()
    url = receiver.on("/t", lambda _: web.Response(status=202, text="thanks"))
    sub = await subscribe(api, headers, url, "payment.succeeded")
    response = await api.client.post(
        f"/api/v1/webhooks/subscriptions/{sub['id']}/test",
        json={"eventType": "payment.succeeded", "useSamplePayload": True},
        headers=headers,
    )
    result = response.json()
    assert (result["success"], result["statusCode"], result["responseBody"]) == (
        True,
        202,
        "thanks",
    )
    assert isinstance(result["elapsedMs"], int)
    [got] = receiver.at("/t")
    verify(sub["signingSecret"], got.headers, got.body)
    assert b'"type":"payment.succeeded"' in got.body
    failing = receiver.on("/t2", lambda _: web.Response(status=500, text="boom"))
    patched = await api.client.patch(
        f"/api/v1/webhooks/subscriptions/{sub['id']}", json={"url": failing}, headers=headers
    )
    assert patched.status_code == 200
    response = await api.client.post(
        f"/api/v1/webhooks/subscriptions/{sub['id']}/test",
        json={"eventType": "payment.succeeded"},
        headers=headers,
    )
    assert response.json()["success"] is False and response.json()["statusCode"] == 500
    assert (await api.client.get("/api/v1/events", headers=headers)).json() == []


async def test_subscription_log_is_newest_first_and_filterable(
    api: Api, receiver: Receiver
) -> None:
    headers = await api.key()
    url = receiver.on("/log", fail_times(1))
    sub = await subscribe(api, headers, url)
    event = await emit(api, headers)
    await eventually(lambda: _delivered(api, headers, event["id"], 1))
    base = f"/api/v1/webhooks/subscriptions/{sub['id']}/deliveries"
    log = (await api.client.get(base, headers=headers)).json()
    assert [a["attempt"] for a in log] == [2, 1]
    failed = (await api.client.get(base, params={"status": "failed"}, headers=headers)).json()
    assert [a["statusCode"] for a in failed] == [500]
    page = await api.client.get(base, params={"limit": 1}, headers=headers)
    assert len(page.json()) == 1
    rest = await api.client.get(
        base, params={"limit": 1, "cursor": page.headers["X-Paging-Cursor"]}, headers=headers
    )
    assert [a["attempt"] for a in rest.json()] == [1]
    assert "X-Paging-Cursor" not in rest.headers


async def test_huge_response_is_not_read(api: Api, receiver: Receiver) -> None:
    """A receiver answering with 1 GiB: the attempt succeeds with a capped log, quickly
    (reading it all would outlast the 3 s delivery timeout used in tests)."""
    chunk = b"y" * (1 << 20)

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        response.content_length = 1 << 30
        await response.prepare(request)
        for _ in range(1024):
            try:
                await response.write(chunk)
            except (ConnectionError, RuntimeError):
                break
        return response

    receiver.streaming["/huge"] = stream
    headers = await api.key()
    await subscribe(api, headers, receiver.url("/huge"))
    event = await emit(api, headers)
    await eventually(lambda: _delivered(api, headers, event["id"], 1))
    [attempt] = await attempts_for(api, headers, event["id"])
    assert attempt["statusCode"] == 200 and len(attempt["responseBody"]) == 4000
    assert attempt["elapsedMs"] < 3000
