"""Subscription filters end to end: the fan-out of every store and every emit path queues an
event only for the filtered subscriptions it passes; a changed filter holds from the very
next emit, in every process; the API, the dry run and the client; test sends ignore it."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection

from tests.conftest import Api
from tests.support.receiver import Receiver
from tests.support.stores import STORES, service_for, settings_for
from tidings.client import AsyncClient, TidingsError
from tidings.config import Settings
from tidings.service import Invalid, Tidings
from tidings.storage import Outbox, StoredEvent

pytestmark = pytest.mark.asyncio

BIG = {"payload.amount.amount": {"$gte": 1000}}
CARDS = {"payload.method": {"$in": ["card"]}}
URL = "http://127.0.0.1:9/"


@pytest.fixture(params=STORES)
async def service(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Tidings]:
    async with service_for(settings_for(request.param, request, tmp_path)) as running:
        yield running


HOW = ["emit", "idempotent", "outbox"]
"""The paths that store an event: the hot path (SQLite's sqlite3 transaction, PostgreSQL's
tidings_emit_v3), an emit with an Idempotency-Key (the shared SQL transaction), and a host
application's outbox (in the app's transaction)."""


async def emit_by(
    service: Tidings, how: str, tenant: str, event_type: str, payload: dict[str, Any]
) -> StoredEvent:
    if how == "outbox":

        def work(_: Connection, outbox: Outbox) -> StoredEvent:
            return outbox.add(service.draft_event(tenant, event_type, payload))

        return await service.transaction(work)
    key = uuid.uuid4().hex if how == "idempotent" else None
    stored, created = await service.emit(tenant, event_type, payload, idempotency_key=key)
    assert created
    return stored


async def queued_for(service: Tidings, event: StoredEvent) -> dict[str, str]:
    """Subscription id -> status of each delivery the event has."""
    found = await service.store.reports.event_deliveries(event.tenant_id, event.id)
    return {d.subscription_id: d.status for d in found}


@pytest.mark.parametrize("how", HOW)
async def test_an_event_is_queued_only_for_the_filtered_subscriptions_it_passes(
    service: Tidings, how: str
) -> None:
    tenant = (await service.store.keys.ensure_tenant("acme")).id
    big, _ = await service.create_subscription(tenant, URL + "big", ["payment.*"], filter=BIG)
    plain, _ = await service.create_subscription(tenant, URL + "plain", ["payment.*"])
    cards, _ = await service.create_subscription(tenant, URL + "cards", ["*"], filter=CARDS)
    paused, _ = await service.create_subscription(
        tenant, URL + "paused", ["payment.*"], enabled=False, filter=CARDS
    )
    other, _ = await service.create_subscription(tenant, URL + "other", ["client.*"], filter=BIG)
    pending = "pending"

    sepa = await emit_by(service, how, tenant, "payment.succeeded", _pay(1500, "sepa"))
    assert await queued_for(service, sepa) == {big.id: pending, plain.id: pending}

    card = await emit_by(service, how, tenant, "payment.succeeded", _pay(10, "card"))
    assert await queued_for(service, card) == {
        plain.id: pending,
        cards.id: pending,
        paused.id: "paused",  # disabled is paused, not lost: filtered as any other
    }

    neither = await emit_by(service, how, tenant, "payment.failed", _pay(1, "cash"))
    assert await queued_for(service, neither) == {plain.id: pending}

    client = await emit_by(service, how, tenant, "client.created", _pay(5000, "card"))
    assert await queued_for(service, client) == {other.id: pending, cards.id: pending}


def _pay(amount: float, method: str) -> dict[str, Any]:
    return {"amount": {"amount": amount, "currency": "USD"}, "method": method}


@pytest.fixture
def two_processes(settings: Settings) -> Callable[[], contextlib.AbstractAsyncContextManager[Any]]:
    """Two services on one database, as two API processes are: each keeps its own
    compiled filters."""

    @contextlib.asynccontextmanager
    async def start() -> AsyncIterator[tuple[Tidings, Tidings]]:
        first = Tidings.from_settings(settings)
        second = Tidings.from_settings(settings)
        try:
            await first.store.migrate()
            yield first, second
        finally:
            await first.close()
            await second.close()

    return start


@pytest.mark.parametrize("how", HOW)
async def test_a_changed_filter_holds_from_the_next_emit_in_every_process(
    two_processes: Callable[[], contextlib.AbstractAsyncContextManager[Any]], how: str
) -> None:
    """``editor`` changes filters; ``emitter`` has compiled them before every change, so
    each of its emits must notice the change in its own transaction."""
    async with two_processes() as (editor, emitter):
        tenant = (await editor.store.keys.ensure_tenant("acme")).id
        sub, _ = await editor.create_subscription(tenant, URL, ["payment.*"], filter=CARDS)

        async def takes(method: str, event_type: str = "payment.succeeded") -> bool:
            event = await emit_by(emitter, how, tenant, event_type, _pay(1, method))
            return sub.id in await queued_for(emitter, event)

        assert await takes("card") and not await takes("sepa")

        edited = await editor.edit_subscription(sub, {"filter": {"payload.method": "sepa"}})
        assert edited is not None and edited.filter == {"payload.method": "sepa"}
        assert await takes("sepa") and not await takes("card")

        await editor.edit_subscription(sub, {"filter": None})  # unfiltered: everything
        assert await takes("card") and await takes("sepa")

        await editor.edit_subscription(sub, {"filter": CARDS})
        assert not await takes("sepa")
        await editor.edit_subscription(sub, {"event_types": ["payment.failed"]})
        assert not await takes("card") and await takes("card", "payment.failed")

        newer, _ = await editor.create_subscription(tenant, URL, ["payment.*"], filter=BIG)
        event = await emit_by(emitter, how, tenant, "payment.failed", _pay(2000, "card"))
        assert set(await queued_for(emitter, event)) == {sub.id, newer.id}

        assert await editor.store.subscriptions.delete(tenant, newer.id)
        event = await emit_by(emitter, how, tenant, "payment.failed", _pay(3000, "card"))
        assert set(await queued_for(emitter, event)) == {sub.id}


async def test_tenants_have_their_own_filters(service: Tidings) -> None:
    acme = (await service.store.keys.ensure_tenant("acme")).id
    globex = (await service.store.keys.ensure_tenant("globex")).id
    ours, _ = await service.create_subscription(acme, URL, ["*"], filter=CARDS)
    theirs, _ = await service.create_subscription(globex, URL, ["*"], filter=BIG)
    card = await emit_by(service, "emit", acme, "payment.succeeded", _pay(5000, "card"))
    assert set(await queued_for(service, card)) == {ours.id}
    big = await emit_by(service, "emit", globex, "payment.succeeded", _pay(5000, "sepa"))
    assert set(await queued_for(service, big)) == {theirs.id}


async def test_redelivery_respects_the_filter(service: Tidings) -> None:
    tenant = (await service.store.keys.ensure_tenant("acme")).id
    cards, _ = await service.create_subscription(tenant, URL, ["payment.*"], filter=CARDS)
    plain, _ = await service.create_subscription(tenant, URL, ["payment.*"])
    sepa = await emit_by(service, "emit", tenant, "payment.succeeded", _pay(1, "sepa"))
    assert await service.redeliver(tenant, sepa, None) == [plain.id]
    with pytest.raises(Invalid) as refused:
        await service.redeliver(tenant, sepa, cards.id)
    assert (refused.value.status, refused.value.code) == (409, "filtered")
    card = await emit_by(service, "emit", tenant, "payment.succeeded", _pay(1, "card"))
    assert sorted(await service.redeliver(tenant, card, None)) == sorted([cards.id, plain.id])
    assert await service.redeliver(tenant, card, cards.id) == [cards.id]


# --- the HTTP API, on both databases ---------------------------------------------------


SUBSCRIPTIONS = "/api/v1/webhooks/subscriptions"


async def test_the_filter_is_saved_read_back_and_replaced(api: Api) -> None:
    headers = await api.key()
    body = {"url": URL, "eventTypes": ["payment.*"], "filter": {**BIG, **CARDS}}
    created = await api.client.post(SUBSCRIPTIONS, json=body, headers=headers)
    assert created.status_code == 201, created.text
    sub_id = created.json()["id"]
    assert created.json()["filter"] == {**BIG, **CARDS}
    read = await api.client.get(f"{SUBSCRIPTIONS}/{sub_id}", headers=headers)
    assert read.json()["filter"] == {**BIG, **CARDS}
    listed = await api.client.get(SUBSCRIPTIONS, headers=headers)
    assert [s["filter"] for s in listed.json()] == [{**BIG, **CARDS}]

    patched = await api.client.patch(
        f"{SUBSCRIPTIONS}/{sub_id}", json={"description": "kept"}, headers=headers
    )
    assert patched.json()["filter"] == {**BIG, **CARDS}
    patched = await api.client.patch(
        f"{SUBSCRIPTIONS}/{sub_id}", json={"filter": CARDS}, headers=headers
    )
    assert patched.status_code == 200 and patched.json()["filter"] == CARDS
    nothing: list[dict[str, Any] | None] = [None, {}]  # an empty filter is no filter
    for none in nothing:
        patched = await api.client.patch(
            f"{SUBSCRIPTIONS}/{sub_id}", json={"filter": none}, headers=headers
        )
        assert patched.status_code == 200 and patched.json()["filter"] is None
    plain = await api.client.post(
        SUBSCRIPTIONS, json={"url": URL, "eventTypes": ["*"]}, headers=headers
    )
    assert plain.json()["filter"] is None


INVALID = [
    ("not an object", "body.filter", None, "validation_error"),
    ({"payload.amount": {"$gt": [1]}}, "filter.payload.amount", "$gt", "invalid_filter"),
    ({"payload.amount": {"$foo": 1}}, "filter.payload.amount", "$foo", "invalid_filter"),
    ({"$gt": 1}, "filter", "$gt", "invalid_filter"),
    ({"$or": []}, "filter", "$or", "invalid_filter"),
    ({"payload.x": {"$regex": "(?<=a)b"}}, "filter.payload.x", "$regex", "invalid_filter"),
    ({"payload.x": {"$in": "card"}}, "filter.payload.x", "$in", "invalid_filter"),
    ({"payload.x": {"$exists": "yes"}}, "filter.payload.x", "$exists", "invalid_filter"),
    ({"payload..x": 1}, "filter.payload..x", None, "invalid_filter"),
    ({"payload.x": {"$eq": 1, "y": 2}}, "filter.payload.x", None, "invalid_filter"),
    ({"payload.x": "y" * 9000}, "filter", None, "invalid_filter"),
]


@pytest.mark.parametrize(("spec", "field", "operator", "code"), INVALID)
async def test_an_invalid_filter_is_a_422_naming_the_path_and_operator_and_stores_nothing(
    api: Api, spec: Any, field: str, operator: str | None, code: str
) -> None:
    headers = await api.key()
    body = {"url": URL, "eventTypes": ["payment.*"], "filter": spec}
    response = await api.client.post(SUBSCRIPTIONS, json=body, headers=headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == code
    [detail] = error["details"] if code == "invalid_filter" else error["details"][:1]
    assert detail["field"] == field
    if operator is not None:
        assert detail["operator"] == operator and operator in error["message"]
    assert (await api.client.get(SUBSCRIPTIONS, headers=headers)).json() == []

    kept = await api.client.post(SUBSCRIPTIONS, json={**body, "filter": CARDS}, headers=headers)
    sub_id = kept.json()["id"]
    patched = await api.client.patch(
        f"{SUBSCRIPTIONS}/{sub_id}", json={"filter": spec, "description": "x"}, headers=headers
    )
    assert patched.status_code == 422
    after = (await api.client.get(f"{SUBSCRIPTIONS}/{sub_id}", headers=headers)).json()
    assert after["filter"] == CARDS and after["description"] is None


async def test_the_dry_run(api: Api) -> None:
    headers = await api.key()
    envelope = {"type": "payment.succeeded", "payload": {"amount": {"amount": 1500}}}
    for spec, matches in ((BIG, True), ({"payload.amount.amount": {"$lt": 1000}}, False)):
        response = await api.client.post(
            "/api/v1/filters/test", json={"filter": spec, "envelope": envelope}, headers=headers
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"matches": matches}
    invalid = await api.client.post(
        "/api/v1/filters/test",
        json={"filter": {"payload.amount": {"$gt": {}}}, "envelope": envelope},
        headers=headers,
    )
    assert invalid.status_code == 422
    assert invalid.json()["error"]["details"] == [
        {
            "field": "filter.payload.amount",
            "operator": "$gt",
            "message": "filter.payload.amount: $gt: needs a number or a string",
        }
    ]
    missing = await api.client.post("/api/v1/filters/test", json={"filter": BIG}, headers=headers)
    assert missing.status_code == 422
    reader = await api.key("acme", "webhooks:read", "events:write")
    forbidden = await api.client.post(
        "/api/v1/filters/test", json={"filter": BIG, "envelope": envelope}, headers=reader
    )
    assert forbidden.status_code == 403
    writer = await api.key("acme", "webhooks:write")
    allowed = await api.client.post(
        "/api/v1/filters/test", json={"filter": BIG, "envelope": envelope}, headers=writer
    )
    assert allowed.json() == {"matches": True}


async def test_delivered_end_to_end_only_when_the_filter_passes(
    api: Api, receiver: Receiver
) -> None:
    headers = await api.key()
    body = {"url": receiver.url("/big"), "eventTypes": ["payment.*"], "filter": BIG}
    created = await api.client.post(SUBSCRIPTIONS, json=body, headers=headers)
    assert created.status_code == 201
    small = await api.client.post(
        "/api/v1/events",
        json={"type": "payment.succeeded", "payload": _pay(5, "card")},
        headers=headers,
    )
    large = await api.client.post(
        "/api/v1/events",
        json={"type": "payment.succeeded", "payload": _pay(5000, "card")},
        headers=headers,
    )
    [got] = await receiver.wait_count("/big", 1)
    assert got.headers["X-Webhook-Id"] == large.json()["id"]
    small_id = small.json()["id"]
    tenant = (await api.tidings.authenticate(headers["X-Api-Key"])).tenant_id  # type: ignore[union-attr]
    assert await api.tidings.store.reports.event_deliveries(tenant, small_id) == []
    redelivered = await api.client.post(
        f"/api/v1/events/{small_id}/redeliver",
        json={"subscriptionId": created.json()["id"]},
        headers=headers,
    )
    assert redelivered.status_code == 409
    assert redelivered.json()["error"]["code"] == "filtered"


async def test_test_sends_ignore_the_filter(api: Api, receiver: Receiver) -> None:
    headers = await api.key()
    never = {"type": "never.emitted"}
    body = {"url": receiver.url("/t"), "eventTypes": ["payment.*"], "filter": never}
    sub_id = (await api.client.post(SUBSCRIPTIONS, json=body, headers=headers)).json()["id"]
    response = await api.client.post(
        f"{SUBSCRIPTIONS}/{sub_id}/test", json={"eventType": "payment.succeeded"}, headers=headers
    )
    assert response.status_code == 200 and response.json()["success"] is True
    [got] = await receiver.wait_count("/t", 1)
    assert b'"type":"payment.succeeded"' in got.body


async def test_the_client_knows_the_filter(api: Api) -> None:
    key = (await api.key())["X-Api-Key"]
    async with AsyncClient("http://tidings/api/v1/", key, http_client=api.client) as client:
        sub = await client.subscriptions.create(URL, ["payment.*"], filter=BIG)
        assert sub.filter == BIG and (await client.subscriptions.get(sub.id)).filter == BIG
        changed = await client.subscriptions.update(sub.id, filter=CARDS)
        assert changed.filter == CARDS
        assert (await client.subscriptions.update(sub.id, filter=None)).filter is None
        envelope = {"payload": {"method": "card"}}
        assert await client.filters.test(CARDS, envelope) is True
        assert await client.filters.test({"payload.method": "sepa"}, envelope) is False
        with pytest.raises(TidingsError) as refused:
            await client.filters.test({"payload.method": {"$nope": 1}}, envelope)
        assert (refused.value.status, refused.value.code) == (422, "invalid_filter")


async def test_downgrading_refuses_while_filters_exist_and_keeps_every_lane(
    settings: Settings,
) -> None:
    """Migration 0012's downgrade: the older code would deliver every event to a filtered
    subscription, so it refuses while one exists; it drops its columns in place (a table
    copy would cascade-delete lanes)."""
    from alembic import command
    from sqlalchemy import text

    from tidings.storage.migrate import alembic_config

    tidings = Tidings.from_settings(settings)
    try:
        await tidings.store.migrate()
        tenant = (await tidings.store.keys.ensure_tenant("acme")).id
        plain, _ = await tidings.create_subscription(tenant, URL + "a", ["*"])
        filtered, _ = await tidings.create_subscription(tenant, URL + "b", ["*"], filter=CARDS)
        db = tidings.store.db  # type: ignore[attr-defined]

        def downgrade(conn: Connection) -> None:
            command.downgrade(alembic_config(conn), "0011")

        with pytest.raises(RuntimeError, match="cannot honour"):
            await db.write(downgrade)
        await tidings.edit_subscription(filtered, {"filter": None})
        await db.write(downgrade)
        lanes = await db.read(
            lambda conn: conn.execute(text("SELECT subscription_id FROM lanes")).all()
        )
        assert sorted(row[0] for row in lanes) == sorted([plain.id, filtered.id])
        await tidings.store.migrate()
        db.filters = type(db.filters)()  # what a restarted process would have
        event, _ = await tidings.emit(tenant, "payment.succeeded", _pay(1, "card"))
        assert set(await queued_for(tidings, event)) == {plain.id, filtered.id}
    finally:
        await tidings.close()


async def test_the_emit_function_locks_the_stream_the_filter_changes_lock() -> None:
    """tidings_emit_v3 compares the filters' version under the tenant's stream lock, the
    lock every filter change takes (``filters_changed``): two names would be two locks."""
    from importlib import import_module

    from tidings.storage.postgres import STREAM_LOCK

    migration = import_module("tidings.migrations.versions.0012_subscription_filters")
    assert f"hashtextextended('{STREAM_LOCK}' || p_tenant, 0)" in migration.EMIT_V3


async def test_postgresql_emits_through_the_locked_path_when_the_filters_keep_changing(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hot path calls again after reading the filters anew; if they changed each time
    (here: every read returns an outdated book), it decides under the lock instead."""
    if not settings.resolved_database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's hot path")
    from tidings.domain.filters import FilterBook
    from tidings.storage import postgres

    reads = 0

    async def outdated(books: Any, conn: Any, tenant_id: str) -> FilterBook:
        nonlocal reads
        reads += 1
        return FilterBook(-1, [])  # a version the tenant never has, and no filters

    tidings = Tidings.from_settings(settings)
    try:
        await tidings.store.migrate()
        tenant = (await tidings.store.keys.ensure_tenant("acme")).id
        cards, _ = await tidings.create_subscription(tenant, URL, ["*"], filter=CARDS)
        monkeypatch.setattr(postgres, "_read_book", outdated)
        card = await emit_by(tidings, "emit", tenant, "payment.succeeded", _pay(1, "card"))
        assert reads == postgres.EMIT_TRIES
        # the locked path left the book it read: the next emit is one call again
        sepa = await emit_by(tidings, "emit", tenant, "payment.succeeded", _pay(1, "sepa"))
        assert reads == postgres.EMIT_TRIES
        assert await queued_for(tidings, card) == {cards.id: "pending"}
        assert await queued_for(tidings, sepa) == {}
    finally:
        await tidings.close()
