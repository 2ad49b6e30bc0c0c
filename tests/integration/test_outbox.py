"""The transactional outbox: a host app's row and its event commit together or not at all."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Column, Connection, Integer, MetaData, String, Table, insert, select

from tests.conftest import Api
from tests.integration.test_delivery import subscribe
from tests.support.receiver import Receiver
from tidings.service import Invalid
from tidings.storage import Outbox

pytestmark = pytest.mark.asyncio

host = MetaData()
notes = Table(
    "outbox_test_notes", host, Column("id", Integer, primary_key=True), Column("text", String(50))
)


class Boom(Exception):
    pass


async def test_failed_write_emits_nothing_and_committed_write_always_emits(
    api: Api, receiver: Receiver
) -> None:
    headers = await api.key()
    tenant = (await api.tidings.authenticate(headers["X-Api-Key"])).tenant_id  # type: ignore[union-attr]
    await subscribe(api, headers, receiver.url("/notes"), "note.created")
    store = api.tidings.store
    await store.apps.in_transaction(lambda conn, _: host.create_all(conn))

    def write(text: str, fail: bool) -> Any:
        def work(conn: Connection, outbox: Outbox) -> str:
            conn.execute(insert(notes).values(text=text))
            event = outbox.add(api.tidings.draft_event(tenant, "note.created", {"text": text}))
            if fail:
                raise Boom  # after both the row and the event were written
            return event.id

        return work

    with pytest.raises(Boom):
        await store.apps.in_transaction(write("lost", fail=True))
    event_id = await store.apps.in_transaction(write("kept", fail=False))

    rows = await store.apps.in_transaction(
        lambda conn, _: [r.text for r in conn.execute(select(notes))]
    )
    assert rows == ["kept"]
    listed = (await api.client.get("/api/v1/events", headers=headers)).json()
    assert [e["id"] for e in listed] == [event_id]
    [got] = await receiver.wait_count("/notes", 1)
    assert got.headers["X-Webhook-Id"] == event_id


async def test_a_draft_with_an_integer_javascript_cannot_hold_is_refused(api: Api) -> None:
    """The outbox's drafts obey emit's rule: the write fails whole, as a 400 would."""
    headers = await api.key()
    tenant = (await api.tidings.authenticate(headers["X-Api-Key"])).tenant_id  # type: ignore[union-attr]
    store = api.tidings.store
    await store.apps.in_transaction(lambda conn, _: host.create_all(conn))

    def work(conn: Connection, outbox: Outbox) -> None:
        conn.execute(insert(notes).values(text="big"))
        payload = {"text": "big", "refs": [{"id": 2**53}]}
        outbox.add(api.tidings.draft_event(tenant, "note.created", payload))

    with pytest.raises(Invalid) as refused:
        await store.apps.in_transaction(work)
    assert (refused.value.status, refused.value.code) == (400, "unsafe_integer")
    assert refused.value.field == "payload.refs.0.id"
    rows = await store.apps.in_transaction(lambda conn, _: list(conn.execute(select(notes))))
    assert rows == []
    assert (await api.client.get("/api/v1/events", headers=headers)).json() == []
