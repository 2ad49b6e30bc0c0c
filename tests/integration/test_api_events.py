"""Emitting and polling events: idempotency, pagination, tenant isolation, catalog."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.conftest import Api
from tests.integration.test_api_errors import assert_error
from tests.integration.test_delivery import subscribe
from tests.support.receiver import Receiver
from tidings.service import Invalid
from tidings_crm.event_types import EVENT_TYPES

pytestmark = pytest.mark.asyncio


async def emit(
    api: Api, headers: dict[str, str], type_: str = "client.created", **extra: object
) -> dict[str, object]:
    response = await api.client.post(
        "/api/v1/events", json={"type": type_, "payload": {"n": 1}, **extra}, headers=headers
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_emit_returns_the_envelope(api: Api) -> None:
    headers = await api.key()
    event = await emit(api, headers, "Client.Created", metadata={"source": "crm"})
    assert str(event["id"]).startswith("evt_")
    assert event["type"] == "client.created"
    assert event["payload"] == {"n": 1} and event["metadata"] == {"source": "crm"}
    tenant = await api.tidings.authenticate(headers["X-Api-Key"])
    assert tenant is not None and event["companyId"] == tenant.tenant_id
    assert str(event["createdUtc"]).endswith("Z")
    fetched = await api.client.get(f"/api/v1/events/{event['id']}", headers=headers)
    assert fetched.json() == event


async def test_idempotency_key_returns_the_same_event(api: Api) -> None:
    headers = {**await api.key(), "Idempotency-Key": "order-42"}
    body = {"type": "payment.succeeded", "payload": {"amount": 5}}
    first = await api.client.post("/api/v1/events", json=body, headers=headers)
    again = await api.client.post("/api/v1/events", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    changed = await api.client.post(
        "/api/v1/events", json={**body, "payload": {"amount": 6}}, headers=headers
    )
    assert changed.status_code == 409
    assert changed.json()["error"]["code"] == "idempotency_conflict"
    listed = await api.client.get("/api/v1/events", headers=headers)
    assert [e["id"] for e in listed.json()] == [first.json()["id"]]


async def test_an_empty_idempotency_key_is_refused_not_shared(api: Api) -> None:
    """Sent empty (a template whose variable was blank), a key would make every such emit
    a replay of the first: each is refused instead, and nothing is stored."""
    headers = {**await api.key(), "Idempotency-Key": ""}
    for payload in ({"n": 1}, {"n": 2}):
        body = {"type": "client.created", "payload": payload}
        refused = await api.client.post("/api/v1/events", json=body, headers=headers)
        assert_error(refused, 422, "validation_error")
    assert (await api.client.get("/api/v1/events", headers=headers)).json() == []
    tenant = await api.tidings.authenticate(headers["X-Api-Key"])
    assert tenant is not None
    for blank in ("", "  "):
        with pytest.raises(Invalid, match="Idempotency-Key must not be empty"):
            await api.tidings.emit(tenant.tenant_id, "client.created", {}, idempotency_key=blank)
    spec = (await api.client.get("/openapi.json")).json()
    emit = spec["paths"]["/api/v1/events"]["post"]
    [header] = [p for p in emit["parameters"] if p["name"].lower() == "idempotency-key"]
    assert header["schema"]["anyOf"][0]["minLength"] == 1


async def test_concurrent_emits_with_one_key_store_one_event(api: Api) -> None:
    headers = {**await api.key(), "Idempotency-Key": "race"}
    body = {"type": "client.created", "payload": {}}
    responses = await asyncio.gather(
        *(api.client.post("/api/v1/events", json=body, headers=headers) for _ in range(8))
    )
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["id"] for r in responses}) == 1


UNSAFE_EMITS = [
    ({"order": {"lines": [{"id": 1}, {"id": 2**53}]}}, None, "payload.order.lines.1.id"),
    ({"order": {"lines": [{"id": -(2**53)}]}}, None, "payload.order.lines.0.id"),
    ({"ok": 1}, {"trace": {"spans": [2**64]}}, "metadata.trace.spans.0"),
]


@pytest.mark.parametrize(("payload", "metadata", "path"), UNSAFE_EMITS)
async def test_integers_javascript_cannot_hold_are_400_naming_the_path(
    api: Api, payload: dict[str, object], metadata: dict[str, object] | None, path: str
) -> None:
    """JSON.parse reads 2^53 + 1 as 2^53: the body a JavaScript receiver re-serializes
    would not be the one signed, nor the number sent."""
    headers = {**await api.key(), "Idempotency-Key": "unsafe"}
    body = {"type": "payment.succeeded", "payload": payload, "metadata": metadata}
    response = await api.client.post("/api/v1/events", json=body, headers=headers)
    error = assert_error(response, 400, "unsafe_integer")
    assert error["details"] == [{"field": path, "message": error["message"]}]
    assert str(error["message"]).startswith(f"{path} is an integer beyond ±9007199254740991")
    assert (await api.client.get("/api/v1/events", headers=headers)).json() == []
    # nothing was stored, the idempotency key included: a fixed retry is a new event
    fixed = {**body, "payload": {"ok": 1}, "metadata": None}
    assert (await api.client.post("/api/v1/events", json=fixed, headers=headers)).status_code == 201


async def test_safe_integers_and_floats_are_stored_and_delivered_as_javascript_prints_them(
    api: Api, receiver: Receiver
) -> None:
    headers = await api.key()
    await subscribe(api, headers, receiver.url("/js"), "payment.succeeded")
    payload = {"id": 2**53 - 1, "min": -(2**53 - 1), "total": 100.0, "rate": 1e-7, "fee": 0.00001}
    response = await api.client.post(
        "/api/v1/events", json={"type": "payment.succeeded", "payload": payload}, headers=headers
    )
    assert response.status_code == 201, response.text
    expected = (
        b'"payload":{"id":9007199254740991,"min":-9007199254740991,'
        b'"total":100,"rate":1e-7,"fee":0.00001}'
    )
    assert expected in response.content
    stored = await api.client.get(response.headers["Location"], headers=headers)
    [delivered] = await receiver.wait_count("/js", 1)
    assert delivered.body == stored.content == response.content


async def test_type_filter_accepts_several(api: Api) -> None:
    headers = await api.key()
    created = await emit(api, headers, "client.created")
    await emit(api, headers, "note.created")
    paid = await emit(api, headers, "payment.succeeded")
    response = await api.client.get(
        "/api/v1/events",
        params=[("type", "client.created"), ("type", "PAYMENT.SUCCEEDED")],
        headers=headers,
    )
    assert [e["id"] for e in response.json()] == [created["id"], paid["id"]]
    comma = await api.client.get(
        "/api/v1/events", params={"type": "client.created,payment.succeeded"}, headers=headers
    )
    assert comma.json() == response.json()


async def test_cursor_pages_miss_nothing_under_concurrent_inserts(api: Api) -> None:
    headers = await api.key()
    emitted: list[str] = []
    seen: list[str] = []
    done = asyncio.Event()

    async def producer() -> None:
        for i in range(60):
            emitted.append(str((await emit(api, headers, payload={"i": i}))["id"]))
        done.set()

    async def consumer() -> None:
        params: dict[str, str | int] = {"limit": 7}
        while True:
            producer_finished = done.is_set()  # read before polling, or the last page races
            response = await api.client.get("/api/v1/events", params=params, headers=headers)
            page = [e["id"] for e in response.json()]
            seen.extend(page)
            next_cursor = response.headers.get("X-Paging-Cursor")
            if next_cursor is not None:
                params = {"limit": 7, "cursor": next_cursor}
            elif page:
                params = {"limit": 7, "after": page[-1]}  # caught up: poll from here
            elif producer_finished:
                return
            await asyncio.sleep(0)  # let the producer run between polls

    producer_task = asyncio.create_task(producer())
    await asyncio.wait_for(consumer(), timeout=30)
    await producer_task
    assert seen == emitted
    assert len(seen) == 60


async def test_after_unknown_event_is_404(api: Api) -> None:
    headers = await api.key()
    response = await api.client.get("/api/v1/events?after=evt_missing", headers=headers)
    assert response.status_code == 404


async def test_tenants_never_see_each_other(api: Api) -> None:
    ours = await api.key("acme")
    theirs = await api.key("globex")
    event = await emit(api, ours)
    sub = await api.client.post(
        "/api/v1/webhooks/subscriptions",
        json={"url": "https://example.com/h", "eventTypes": ["*"]},
        headers=ours,
    )
    sub_id = sub.json()["id"]
    assert (await api.client.get("/api/v1/events", headers=theirs)).json() == []
    assert (await api.client.get("/api/v1/webhooks/subscriptions", headers=theirs)).json() == []
    foreign = [
        ("GET", f"/api/v1/events/{event['id']}", None),
        ("GET", f"/api/v1/events/{event['id']}/deliveries", None),
        ("POST", f"/api/v1/events/{event['id']}/redeliver", {}),
        ("GET", f"/api/v1/webhooks/subscriptions/{sub_id}", None),
        ("PATCH", f"/api/v1/webhooks/subscriptions/{sub_id}", {"enabled": False}),
        ("POST", f"/api/v1/webhooks/subscriptions/{sub_id}/test", {"eventType": "client.created"}),
        ("GET", f"/api/v1/webhooks/subscriptions/{sub_id}/deliveries", None),
        ("DELETE", f"/api/v1/webhooks/subscriptions/{sub_id}", None),
    ]
    for method, path, body in foreign:
        response = await api.client.request(method, path, json=body, headers=theirs)
        assert response.status_code == 404, (method, path, response.text)
    still = await api.client.get(f"/api/v1/webhooks/subscriptions/{sub_id}", headers=ours)
    assert still.json()["enabled"] is True


async def test_catalog_lists_the_crm_types_with_schemas(api: Api) -> None:
    headers = await api.key("acme", "events:read")
    response = await api.client.get("/api/v1/event-types", headers=headers)
    assert response.status_code == 200
    names = {t["name"] for t in response.json()}
    assert {t.name for t in EVENT_TYPES} <= names
    one = await api.client.get("/api/v1/event-types/Payment.Failed", headers=headers)
    assert one.json()["schema"]["type"] == "object"
    assert one.json()["samplePayload"]


async def test_openapi_is_served(api: Api) -> None:
    response = await api.client.get("/openapi.json")
    spec = response.json()
    assert "/api/v1/events" in spec["paths"]
    assert "/api/v1/webhooks/subscriptions/{subscription_id}/test" in spec["paths"]
    json.dumps(spec)
