"""PostgreSQL's partitioned history (migration 0013): retention drops whole partitions of
old, finished rows and keeps those a pending delivery holds; keys stay unique
without unique indexes; the migration converts a database with rows and back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Connection, text

from tests.conftest import Api, eventually, running_api
from tests.integration.test_delivery import attempts_for, emit, subscribe
from tests.integration.test_retention import TWO_DAYS_LATER
from tests.support.receiver import Receiver
from tidings.config import Settings
from tidings.dispatcher.retention import DAY_MS, prune_once
from tidings.domain.clock import now_ms
from tidings.service import Tidings
from tidings.storage.migrate import alembic_config
from tidings.storage.partitions import TABLES, ranges

pytestmark = pytest.mark.asyncio

Bounds = dict[str, list[tuple[int | None, int]]]


@pytest.fixture
def pg_settings(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        settings = make_settings(**overrides)
        if not settings.resolved_database_url.startswith("postgresql"):
            pytest.skip("PostgreSQL partitions")
        return settings

    return make


def bounds(conn: Connection) -> Bounds:
    return {t.table: [(p.low, p.high) for p in ranges(conn, t.table)] for t in TABLES}


def count(sql: str) -> Callable[[Connection], int]:
    return lambda conn: int(conn.execute(text(sql)).scalar_one())


async def settle(api: Api, attempts: int) -> None:
    """Wait until ``attempts`` attempts are recorded, then make the partitions ahead."""
    db = api.tidings.store.db  # type: ignore[attr-defined]

    async def recorded() -> bool:
        return int(await db.read(count("SELECT count(*) FROM attempts"))) >= attempts

    await eventually(recorded)
    await api.tidings.store.retention.prepare_partitions(3)


async def test_retention_drops_old_finished_partitions_and_keeps_held_ones(
    pg_settings: Callable[..., Settings], receiver: Receiver
) -> None:
    """Partitions of 3 keys; events 1-3 and 7-9 are delivered; event 4 waits for a retry:
    its partitions stay, with everything the API shows of it, and the other old rows of
    those partitions are deleted row by row. Event 10's delivery is paused: as with row
    deletes, that does not keep it (see the README), so its partitions go whole."""
    settings = pg_settings(partition_rows=3, retry_base_delay=3600, retry_max_delay=3600)
    async with running_api(settings) as api:
        headers = await api.key()
        await subscribe(api, headers, receiver.on("/ok", lambda _: _ok()), "client.created")
        await subscribe(api, headers, receiver.on("/fail", lambda _: _fail()), "invoice.created")
        paused = await subscribe(api, headers, receiver.url("/paused"), "note.created")
        off = {"enabled": False}
        path = f"/api/v1/webhooks/subscriptions/{paused['id']}"
        assert (await api.client.patch(path, json=off, headers=headers)).status_code == 200

        batches = [
            ["client.created"] * 3,
            ["invoice.created", "client.created", "client.created"],
            ["client.created"] * 3,
            ["note.created", "client.created", "client.created"],
            ["client.created"],
        ]
        emitted: list[dict[str, Any]] = []
        for batch in batches:
            emitted += [await emit(api, headers, kind) for kind in batch]
            await settle(api, sum(1 for e in emitted if e["type"] != "note.created"))
        held = [emitted[3]]
        before = {e["id"]: await _shown(api, headers, e["id"]) for e in held}
        assert before[held[0]["id"]][1][0]["statusCode"] == 500

        pruned = await prune_once(api.tidings.store.retention, 1, 30, 100, TWO_DAYS_LATER)

        db = api.tidings.store.db  # type: ignore[attr-defined]
        left = await db.read(bounds)
        assert left["events"] == [(4, 7), (13, 16), (16, 19), (19, 22)]
        assert left["deliveries"] == [(4, 7), (13, 16), (16, 19), (19, 22)]
        assert left["attempts"] == [(4, 7), (13, 16), (16, 19)]
        assert pruned.partitions >= 3 * 3  # [1, 4), [7, 10), [10, 13) of each
        assert pruned.events == 2  # 5 and 6: old and finished, in held partitions
        listed = (await api.client.get("/api/v1/events", headers=headers)).json()
        # 13 waits for its partition to be past the cutoff as a whole
        kept = [*held, emitted[12]]
        assert [e["id"] for e in listed] == [e["id"] for e in kept]
        for event in held:
            assert await _shown(api, headers, event["id"]) == before[event["id"]]
        for event in emitted:
            if event not in kept:
                gone = await api.client.get(f"/api/v1/events/{event['id']}", headers=headers)
                assert gone.status_code == 404


async def test_keys_and_ids_are_found_across_partitions_and_concurrent_keys_make_one_event(
    pg_settings: Callable[..., Settings],
) -> None:
    """No unique index guards ids and idempotency keys on a partitioned table: a key is
    looked up and inserted under the tenant's stream lock."""
    async with running_api(pg_settings(partition_rows=2), dispatcher=False) as api:
        headers = await api.key()

        async def emit_keyed(key: str) -> tuple[bool, str]:
            """(replayed, the event's id)"""
            response = await api.client.post(
                "/api/v1/events",
                json={"type": "client.created", "payload": {"n": 1}},
                headers={**headers, "Idempotency-Key": key},
            )
            assert response.status_code == 201, response.text
            return "Idempotent-Replayed" in response.headers, response.json()["id"]

        first = await emit_keyed("k-first")
        spread = [await emit(api, headers) for _ in range(6)]  # three partitions further
        await api.tidings.store.retention.prepare_partitions(2)
        assert await emit_keyed("k-first") == (True, first[1])
        for event in [{"id": first[1]}, *spread]:
            found = await api.client.get(f"/api/v1/events/{event['id']}", headers=headers)
            assert found.status_code == 200

        raced = await asyncio.gather(*(emit_keyed("k-race") for _ in range(20)))
        assert sorted(replayed for replayed, _ in raced) == [False] + [True] * 19
        assert len({event_id for _, event_id in raced}) == 1
        db = api.tidings.store.db  # type: ignore[attr-defined]
        stored = "SELECT count(*) FROM events WHERE idempotency_key = 'k-race'"
        assert await db.read(count(stored)) == 1


async def test_the_migration_partitions_a_database_with_rows_and_back(
    pg_settings: Callable[..., Settings], receiver: Receiver
) -> None:
    """Rows written before 0013 stay where they are (the old table is the first
    partition) and are delivered after it; retention still deletes its old rows one by one
    until all of it can go; the downgrade copies them back."""
    settings = pg_settings()
    tidings = Tidings.from_settings(settings)
    db = tidings.store.db  # type: ignore[attr-defined]
    try:
        await db.write(lambda conn: _migrate(conn, "0012"))
        tenant = await tidings.store.keys.ensure_tenant("acme")
        await tidings.create_subscription(tenant.id, receiver.url("/old"), ["*"])
        old = [(await tidings.emit(tenant.id, "client.created", {"n": n}))[0] for n in range(4)]
        aged = f"UPDATE events SET created_ms = created_ms - {3 * DAY_MS} WHERE seq = 1"
        await db.write(lambda conn: conn.execute(text(aged)))
    finally:
        await tidings.close()

    async with running_api(settings) as api:  # migrates to the head
        db = api.tidings.store.db  # type: ignore[attr-defined]
        assert (await db.read(bounds))["events"][0] == (None, 5)
        headers = await api.key()
        await eventually(lambda: _delivered(api, headers, [e.id for e in old]))
        pruned = await prune_once(api.tidings.store.retention, 1, 30, 100, now_ms())
        assert (pruned.events, pruned.partitions) == (1, 0)
        old = old[1:]
        new, _ = await api.tidings.emit(tenant.id, "client.created", {"n": 4})
        await receiver.wait_count("/old", 5)
        assert new.seq == 5

    tidings = Tidings.from_settings(settings)
    db = tidings.store.db  # type: ignore[attr-defined]
    try:
        await db.write(lambda conn: _migrate(conn, "0012", down=True))
        flat = "SELECT count(*) FROM pg_class WHERE relname = 'events' AND relkind = 'r'"
        assert await db.read(count(flat)) == 1
        assert await db.read(count("SELECT count(*) FROM events")) == 4
        delivered = "SELECT count(*) FROM deliveries WHERE status = 'succeeded'"
        assert await db.read(count(delivered)) == 4
        for event in old:
            assert await tidings.store.events.get_event(tenant.id, event.id) == event
        await tidings.prepare_database()
        assert (await db.read(bounds))["events"][0] == (None, 6)
    finally:
        await tidings.close()


def _migrate(conn: Connection, revision: str, down: bool = False) -> None:
    from alembic import command

    (command.downgrade if down else command.upgrade)(alembic_config(conn), revision)


async def _delivered(api: Api, headers: dict[str, str], event_ids: list[str]) -> bool:
    for event_id in event_ids:
        log = await attempts_for(api, headers, event_id)
        if not log or log[-1]["status"] != "succeeded":
            return False
    return True


async def _shown(api: Api, headers: dict[str, str], event_id: str) -> tuple[Any, Any]:
    event = await api.client.get(f"/api/v1/events/{event_id}", headers=headers)
    log = await api.client.get(f"/api/v1/events/{event_id}/deliveries", headers=headers)
    return event.json(), log.json()


def _ok() -> Any:
    from aiohttp import web

    return web.Response(status=200, text="ok")


def _fail() -> Any:
    from aiohttp import web

    return web.Response(status=500, text="down")


async def test_the_hot_path_keeps_generic_plans(pg_settings: Callable[..., Settings]) -> None:
    """Custom plans re-planned every hot statement across every partition (see
    ``postgres.HOT_SETTINGS``)."""
    async with running_api(pg_settings(), dispatcher=False) as api:
        db = api.tidings.store.db  # type: ignore[attr-defined]
        async with db.hot_connection() as conn:
            assert await conn.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
