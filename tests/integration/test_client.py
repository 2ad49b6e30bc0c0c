"""``tidings.client.AsyncClient`` against the real app over ASGI, on a real database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.conftest import Api, eventually
from tests.support.receiver import Receiver
from tidings.app import create_app
from tidings.client import (
    AsyncClient,
    CreatedSubscription,
    Event,
    NotFound,
    RateLimited,
    Subscription,
    TidingsError,
    Unauthorized,
)

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def client(api: Api) -> AsyncIterator[AsyncClient]:
    key = (await api.key())["X-Api-Key"]
    async with AsyncClient("http://tidings/api/v1/", key, http_client=api.client) as client:
        yield client


async def test_emit_with_idempotency_key_returns_the_same_event(client: AsyncClient) -> None:
    first = await client.events.emit(
        "Client.Created", {"clientId": "cli_1"}, metadata={"by": "test"}, idempotency_key="k-1"
    )
    again = await client.events.emit("client.created", {"clientId": "cli_1"}, {"by": "test"}, "k-1")
    assert isinstance(first, Event) and again == first
    assert first.type == "client.created" and first.metadata == {"by": "test"}
    assert isinstance(first.created_utc, datetime)
    assert await client.events.get(first.id) == first
    other = await client.events.emit("client.created", {"clientId": "cli_1"})
    assert other.id != first.id
    with pytest.raises(TidingsError) as reused:
        await client.events.emit("client.created", {"clientId": "cli_2"}, idempotency_key="k-1")
    assert (reused.value.status, reused.value.code) == (409, "idempotency_conflict")
    with pytest.raises(TidingsError) as blank:  # sent, not dropped: a retry would duplicate
        await client.events.emit("client.created", {"clientId": "cli_3"}, idempotency_key="")
    assert blank.value.status == 422


async def test_iter_walks_every_page_in_order(client: AsyncClient) -> None:
    emitted = [(await client.events.emit("client.created", {"n": n})).id for n in range(7)]
    noise = await client.events.emit("lead.created", {"n": 0})

    first = await client.events.list(type="client.created", limit=2)
    assert [e.id for e in first] == emitted[:2] and first.next_cursor is not None
    second = await client.events.list(type="client.created", limit=2, cursor=first.next_cursor)
    assert [e.id for e in second.items] == emitted[2:4]

    walked = [e.id async for e in client.events.iter(type="client.created", limit=2)]
    assert walked == emitted
    both = [e.id async for e in client.events.iter(type=["client.created", "lead.created"])]
    assert both == [*emitted, noise.id]
    resumed = [e.id async for e in client.events.iter(limit=3, after=emitted[4])]
    assert resumed == [*emitted[5:], noise.id]
    last = await client.events.list(limit=500)
    assert last.next_cursor is None


async def test_errors_map_to_tidings_error(api: Api, client: AsyncClient) -> None:
    with pytest.raises(NotFound) as missing:
        await client.events.get("evt_missing")
    assert (missing.value.status, missing.value.code) == (404, "not_found")

    with pytest.raises(TidingsError) as invalid:
        await client.events.emit("no-dot", {})
    assert (invalid.value.status, invalid.value.code) == (422, "validation_error")
    assert invalid.value.details and "type" in str(invalid.value.details)

    async with AsyncClient("http://tidings", "tdg_wrong", http_client=api.client) as stranger:
        with pytest.raises(Unauthorized) as denied:
            await stranger.event_types.list()
    assert (denied.value.status, denied.value.code) == (401, "unauthorized")

    with pytest.raises(TidingsError) as bad_cursor:
        await client.events.list(cursor="not-a-cursor")
    assert (bad_cursor.value.status, bad_cursor.value.code) == (400, "invalid_cursor")


async def test_rate_limit_raises_with_retry_after(start_api: Callable[..., Any]) -> None:
    async with start_api(dispatcher=False, api_rate_limit=1) as api:
        key = (await api.key())["X-Api-Key"]
        client = AsyncClient("http://tidings", key, http_client=api.client)
        with pytest.raises(RateLimited) as limited:
            for _ in range(10):
                await client.event_types.list()
    assert limited.value.status == 429 and limited.value.code == "rate_limited"
    assert limited.value.retry_after is not None and limited.value.retry_after >= 1


async def test_subscription_round_trip(client: AsyncClient, receiver: Receiver) -> None:
    created = await client.subscriptions.create(
        receiver.url("/hook"), ["Client.*"], description="crm", max_concurrency=2
    )
    assert isinstance(created, CreatedSubscription)
    assert created.signing_secret is not None and created.signing_secret.startswith("whsec_")
    assert (created.event_types, created.enabled, created.status) == (["client.*"], True, "active")
    assert (created.description, created.max_concurrency) == ("crm", 2)

    fetched = await client.subscriptions.get(created.id)
    assert type(fetched) is Subscription and fetched.id == created.id
    updated = await client.subscriptions.update(
        created.id, enabled=False, description=None, event_types="*"
    )
    assert (updated.enabled, updated.status, updated.description) == (False, "disabled", None)
    assert updated.event_types == ["*"] and updated.updated_utc >= created.updated_utc

    rotated = await client.subscriptions.rotate_secret(created.id)
    assert rotated.signing_secret is not None and rotated.signing_secret.startswith("whsec_")
    assert rotated.signing_secret != created.signing_secret
    assert rotated.previous_secret_expires_utc is not None

    second = await client.subscriptions.create(receiver.url("/other"), "lead.created")
    page = await client.subscriptions.list(limit=1)
    assert len(page.items) == 1 and page.next_cursor is not None
    assert [s.id async for s in client.subscriptions.iter(limit=1)] == [created.id, second.id]

    await client.subscriptions.delete(created.id)
    with pytest.raises(NotFound):
        await client.subscriptions.get(created.id)
    with pytest.raises(NotFound):
        await client.subscriptions.delete(created.id)


async def test_deliveries_after_a_real_delivery(client: AsyncClient, receiver: Receiver) -> None:
    sub = await client.subscriptions.create(receiver.url("/hook"), ["client.created"])
    event = await client.events.emit("client.created", {"clientId": "cli_9"})
    [got] = await receiver.wait_count("/hook", 1)
    assert got.headers["X-Webhook-Id"] == event.id

    async def logged() -> bool:
        return len(await client.events.deliveries(event.id)) == 1

    await eventually(logged)
    [attempt] = await client.events.deliveries(event.id)
    assert (attempt.event_id, attempt.subscription_id) == (event.id, sub.id)
    assert (attempt.status, attempt.status_code, attempt.attempt) == ("succeeded", 200, 1)

    log = await client.subscriptions.deliveries(sub.id, status="succeeded")
    assert [a.id for a in log] == [attempt.id] and log.next_cursor is None
    assert (await client.subscriptions.deliveries(sub.id, status="failed")).items == []

    redelivery = await client.events.redeliver(event.id, subscription_id=sub.id)
    assert (redelivery.event_id, redelivery.subscription_ids) == (event.id, [sub.id])
    await receiver.wait_count("/hook", 2)

    async def logged_twice() -> bool:
        return len([a async for a in client.subscriptions.iter_deliveries(sub.id, limit=1)]) == 2

    await eventually(logged_twice)


async def test_test_send_verify_and_catalog(client: AsyncClient, receiver: Receiver) -> None:
    sub = await client.subscriptions.create(receiver.url("/hook"), ["client.*"])
    result = await client.subscriptions.test(sub.id, "client.created")
    assert result.success and result.status_code == 200 and result.response_body == "ok"
    verified = await client.subscriptions.verify(sub.id)
    assert verified.verification is not None and verified.verification.success

    types = await client.event_types.list()
    assert "client.created" in {t.name for t in types}
    one = await client.event_types.get("Client.Created")
    assert one.name == "client.created" and isinstance(one.schema, dict) and one.sample_payload


async def test_rest_hooks(api: Api, client: AsyncClient, receiver: Receiver) -> None:
    paths = (await api.client.get("/openapi.json")).json()["paths"]
    if "/api/v1/hooks" not in paths:
        pytest.skip("REST Hooks routes (/api/v1/hooks) are not served by this build yet")
    hook_id = await client.hooks.subscribe(receiver.url("/zap"), "client.created")
    assert (await client.subscriptions.get(hook_id)).kind == "rest_hook"
    [sample] = await client.hooks.samples("client.created")
    assert sample["type"] == "client.created"
    event = await client.events.emit("client.created", {"clientId": "cli_3"})
    assert (await client.hooks.samples("client.created"))[0]["id"] == event.id
    await client.hooks.unsubscribe(hook_id)
    with pytest.raises(NotFound):
        await client.hooks.unsubscribe(hook_id)


async def test_transport_injection_and_base_url(api: Api) -> None:
    """A transport can be injected instead of a whole httpx client."""
    key = (await api.key())["X-Api-Key"]
    app = create_app(api.tidings, run_dispatcher=False, migrate=False)
    transport = httpx.ASGITransport(app=app)
    async with AsyncClient("http://tidings/", key, transport=transport) as client:
        assert await client.event_types.get("client.created")
