"""The reference CRM host app: its actions write a record and emit its event in one
transaction, honour Idempotency-Key, search, and keep tenants apart."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from sqlalchemy import Connection, func, select

from tests.conftest import Api
from tests.integration.test_delivery import subscribe
from tests.support.receiver import Receiver
from tidings.app import create_app
from tidings.config import Settings
from tidings.service import Tidings
from tidings.storage import Outbox
from tidings_crm import actions
from tidings_crm.event_types import EVENT_TYPES
from tidings_crm.schema import clients

pytestmark = pytest.mark.asyncio

DANA = {
    "firstName": "Dana",
    "lastName": "Whitfield",
    "companyName": "Whitfield Landscaping LLC",
    "email": "Dana@WhitfieldLandscaping.com",
    "phone": "+15125550142",
    "address": {"line1": "4200 Riverside Dr", "city": "Austin", "country": "US"},
    "tags": ["landscaping", "referral"],
}
MARCUS = {
    "firstName": "Marcus",
    "lastName": "Okafor",
    "email": "marcus@okafordental.com",
    "source": "website",
    "estimatedValue": {"amount": 480000, "currency": "USD"},
}


@contextlib.asynccontextmanager
async def running_crm(settings: Settings) -> AsyncIterator[Api]:
    tidings = Tidings.from_settings(settings)
    app = create_app(tidings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://crm") as client:
            yield Api(client, tidings)


@pytest.fixture
async def crm(make_settings: Callable[..., Settings]) -> AsyncIterator[Api]:
    async with running_crm(make_settings()) as running:
        yield running


async def tenant_of(api: Api, headers: dict[str, str]) -> str:
    key = await api.tidings.authenticate(headers["X-Api-Key"])
    assert key is not None
    return key.tenant_id


async def emitted(api: Api, headers: dict[str, str]) -> list[dict[str, Any]]:
    """Every event of the caller's tenant, oldest first, each checked against the catalog."""
    page = await api.tidings.store.events.list_events(await tenant_of(api, headers), [], None, 500)
    envelopes = [json.loads(event.body) for event in page.items]
    for envelope in envelopes:
        event_type = next((t for t in EVENT_TYPES if t.name == envelope["type"]), None)
        assert event_type is not None, envelope["type"]
        validator = Draft202012Validator(
            event_type.schema, format_checker=Draft202012Validator.FORMAT_CHECKER
        )
        validator.validate(envelope["payload"])
    return envelopes


async def post(
    api: Api, path: str, body: Any, headers: dict[str, str], status: int = 201, **extra: str
) -> dict[str, Any]:
    response = await api.client.post(f"/api/v1{path}", json=body, headers={**headers, **extra})
    assert response.status_code == status, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_each_action_writes_its_record_and_emits_its_event(crm: Api) -> None:
    h = await crm.key("acme", "events:write", "events:read")
    client = await post(crm, "/clients", DANA, h)
    cid = client["clientId"]
    assert client["email"] == "dana@whitfieldlandscaping.com"
    assert client["status"] == "prospect"

    patched = await crm.client.patch(
        f"/api/v1/clients/{cid}", json={"phone": "+15125550199", "tags": ["vip"]}, headers=h
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["phone"] == "+15125550199"
    status = await post(crm, f"/clients/{cid}/status", {"status": "active"}, h, 200)
    assert status["status"] == "active"

    lead = await post(crm, "/leads", MARCUS, h)
    converted = await post(crm, f"/leads/{lead['leadId']}/convert", {}, h)
    assert converted["lead"]["clientId"] == converted["client"]["clientId"]
    assert converted["client"]["email"] == "marcus@okafordental.com"

    note = await post(crm, "/notes", {"subject": {"type": "client", "id": cid}, "body": "Hi"}, h)
    invoice = await post(
        crm,
        "/invoices",
        {
            "clientId": cid,
            "dueDate": "2026-03-03",
            "lineItems": [
                {"description": "Maintenance", "quantity": 1, "unitPrice": {"amount": 85000}},
                {"description": "Zones", "quantity": 2, "unitPrice": {"amount": 16500}},
            ],
            "tax": {"amount": 11900},
        },
        h,
    )
    assert invoice["total"] == {"amount": 129900, "currency": "USD"}
    assert invoice["invoiceNumber"] == "INV-00001"
    payment = await post(
        crm,
        "/payments",
        {
            "clientId": cid,
            "invoiceId": invoice["invoiceId"],
            "amount": {"amount": 129900},
            "method": "card",
            "cardLast4": "4242",
        },
        h,
    )
    agreement = await post(
        crm,
        "/agreements",
        {
            "clientId": cid,
            "title": "Annual maintenance",
            "signedBy": {"name": "Dana Whitfield", "ipAddress": "203.0.113.24"},
            "effectiveDate": "2026-03-01",
            "documentUrl": "https://crm.example.com/agr.pdf",
        },
        h,
    )

    events = await emitted(crm, h)
    assert [e["type"] for e in events] == [
        "client.created",
        "client.updated",
        "client.status_changed",
        "lead.created",
        "client.created",
        "lead.converted",
        "note.created",
        "invoice.created",
        "payment.succeeded",
        "agreement.signed",
    ]
    by_type = {e["type"]: e["payload"] for e in events}
    assert by_type["client.updated"]["changedFields"] == ["phone", "tags"]
    assert by_type["client.updated"]["previousValues"]["phone"] == "+15125550142"
    assert by_type["client.status_changed"]["previousStatus"] == "prospect"
    assert by_type["note.created"]["noteId"] == note["noteId"]
    assert by_type["payment.succeeded"] == payment
    assert by_type["agreement.signed"] == agreement
    assert by_type["lead.converted"]["clientId"] == converted["client"]["clientId"]


async def test_failed_write_emits_nothing_and_committed_write_always_emits(crm: Api) -> None:
    h = await crm.key("acme", "events:write", "events:read")
    await post(crm, "/clients", DANA, h)
    duplicate = await crm.client.post("/api/v1/clients", json=DANA, headers=h)
    assert duplicate.status_code == 409
    assert duplicate.json()["error"]["code"] == "conflict"

    other = await post(crm, "/clients", {**DANA, "email": "dana@other.example"}, h)
    clash = await crm.client.patch(
        f"/api/v1/clients/{other['clientId']}", json={"email": DANA["email"]}, headers=h
    )
    assert clash.status_code == 409
    assert [e["type"] for e in await emitted(crm, h)] == ["client.created", "client.created"]


async def test_an_action_that_fails_after_emitting_leaves_no_row_and_no_event(crm: Api) -> None:
    h = await crm.key("acme", "events:write", "events:read")
    tenant = await tenant_of(crm, h)

    class Boom(Exception):
        pass

    def work(conn: Connection, outbox: Outbox) -> None:
        actions.create_client(conn, outbox, crm.tidings, tenant, DANA, None)
        raise Boom  # after the row and its event were both written

    with pytest.raises(Boom):
        await crm.tidings.store.apps.in_transaction(work)
    count = await crm.tidings.store.apps.in_transaction(
        lambda conn, _: conn.execute(select(func.count()).select_from(clients)).scalar_one()
    )
    assert count == 0
    assert await emitted(crm, h) == []


async def test_idempotency_key_replays_the_record_once(crm: Api) -> None:
    h = await crm.key("acme", "events:write", "events:read")
    first = await crm.client.post(
        "/api/v1/clients", json=DANA, headers={**h, "Idempotency-Key": "k1"}
    )
    again = await crm.client.post(
        "/api/v1/clients", json=DANA, headers={**h, "Idempotency-Key": "k1"}
    )
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers

    cid = first.json()["clientId"]
    body = {"status": "active"}
    for _ in range(2):
        await post(crm, f"/clients/{cid}/status", body, h, 200, **{"Idempotency-Key": "k2"})
    reused = await crm.client.post(
        "/api/v1/leads", json=MARCUS, headers={**h, "Idempotency-Key": "k1"}
    )
    assert reused.status_code == 409
    assert reused.json()["error"]["code"] == "idempotency_conflict"
    types = [e["type"] for e in await emitted(crm, h)]
    assert types == ["client.created", "client.status_changed"]


async def test_invalid_transitions_are_409_and_emit_nothing(crm: Api) -> None:
    h = await crm.key("acme", "events:write", "events:read")
    lead = await post(crm, "/leads", MARCUS, h)
    await post(crm, f"/leads/{lead['leadId']}/convert", None, h)
    twice = await crm.client.post(f"/api/v1/leads/{lead['leadId']}/convert", headers=h)
    assert twice.status_code == 409
    assert twice.json()["error"]["code"] == "invalid_transition"

    client = await post(crm, "/clients", DANA, h)
    same = await crm.client.post(
        f"/api/v1/clients/{client['clientId']}/status", json={"status": "prospect"}, headers=h
    )
    assert same.status_code == 409
    types = [e["type"] for e in await emitted(crm, h)]
    assert types == ["lead.created", "client.created", "lead.converted", "client.created"]


async def test_requests_are_validated(crm: Api) -> None:
    h = await crm.key("acme", "events:write", "events:read")
    for body in (
        {**DANA, "nickname": "D"},  # extra field
        {**DANA, "first_name": "Dana"},  # snake_case is not the API's spelling
        {**DANA, "phone": "512-555-0142"},
        {**DANA, "status": "gone"},
    ):
        response = await crm.client.post("/api/v1/clients", json=body, headers=h)
        assert response.status_code == 422, body
    cid = (await post(crm, "/clients", DANA, h))["clientId"]
    null_name = await crm.client.patch(
        f"/api/v1/clients/{cid}", json={"firstName": None}, headers=h
    )
    assert null_name.status_code == 422


async def test_searches_find_clients_and_leads(crm: Api) -> None:
    h = await crm.key("acme", "events:write", "events:read")
    dana = await post(crm, "/clients", DANA, h)
    await post(crm, "/clients", {"firstName": "Ann", "lastName": "Lee", "phone": "+15550000001"}, h)
    lead = await post(crm, "/leads", MARCUS, h)

    async def search(path: str, **params: str) -> list[str]:
        response = await crm.client.get(f"/api/v1/{path}/search", params=params, headers=h)
        assert response.status_code == 200, response.text
        return [r.get("clientId") if path == "clients" else r["leadId"] for r in response.json()]

    assert await search("clients", email="DANA@whitfieldlandscaping.com") == [dana["clientId"]]
    assert await search("clients", phone="+15125550142") == [dana["clientId"]]
    assert await search("clients", name="dana whit") == [dana["clientId"]]
    assert await search("clients", name="landscaping") == [dana["clientId"]]
    assert await search("clients", name="dana", phone="+15550000001") == []
    assert await search("clients", name="%") == []
    assert await search("leads", email="Marcus@OkaforDental.com") == [lead["leadId"]]
    empty = await crm.client.get("/api/v1/clients/search", headers=h)
    assert empty.status_code == 422


async def test_tenants_are_isolated(crm: Api) -> None:
    acme = await crm.key("acme", "events:write", "events:read")
    globex = await crm.key("globex", "events:write", "events:read")
    cid = (await post(crm, "/clients", DANA, acme))["clientId"]
    lid = (await post(crm, "/leads", MARCUS, acme))["leadId"]

    attempts = [
        ("PATCH", f"/clients/{cid}", {"firstName": "X"}),
        ("POST", f"/clients/{cid}/status", {"status": "active"}),
        ("POST", f"/leads/{lid}/convert", {}),
        ("POST", "/notes", {"subject": {"type": "lead", "id": lid}, "body": "x"}),
        ("POST", "/payments", {"clientId": cid, "amount": {"amount": 5}, "method": "cash"}),
        ("POST", "/agreements", {"clientId": cid, "signedBy": {"name": "X"}}),
        (
            "POST",
            "/invoices",
            {
                "clientId": cid,
                "dueDate": "2026-03-03",
                "lineItems": [{"description": "x", "quantity": 1, "unitPrice": {"amount": 1}}],
            },
        ),
    ]
    for method, path, body in attempts:
        response = await crm.client.request(method, f"/api/v1{path}", json=body, headers=globex)
        assert response.status_code == 404, (path, response.text)
    # the same email is free in another tenant, and searches see only their own tenant
    await post(crm, "/clients", DANA, globex)
    found = await crm.client.get(
        "/api/v1/leads/search", params={"email": str(MARCUS["email"])}, headers=globex
    )
    assert found.json() == []
    assert [e["type"] for e in await emitted(crm, globex)] == ["client.created"]


async def test_scopes(crm: Api) -> None:
    reader = await crm.key("acme", "events:read")
    writer = await crm.key("acme", "events:write")
    assert (await crm.client.post("/api/v1/clients", json=DANA, headers=reader)).status_code == 403
    search = await crm.client.get("/api/v1/leads/search?email=a@b.co", headers=writer)
    assert search.status_code == 403
    assert (await crm.client.post("/api/v1/clients", json=DANA)).status_code == 401


async def test_seed_walk_through_delivers_client_created(crm: Api, receiver: Receiver) -> None:
    admin = await crm.key("acme")
    await subscribe(crm, admin, receiver.url("/crm"), "client.created", "payment.succeeded")
    client = await post(crm, "/clients", DANA, admin)
    [got] = await receiver.wait_count("/crm", 1, timeout=1.5)
    envelope = json.loads(got.body)
    assert envelope["type"] == "client.created"
    assert envelope["payload"] == client
