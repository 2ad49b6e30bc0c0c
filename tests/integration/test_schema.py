"""The migrations build exactly the tables ``schema.py`` describes, on both databases."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, insert, text
from structlog.testing import capture_logs

from tests.conftest import eventually
from tidings.config import Settings
from tidings.dispatcher.retention import run_pruner
from tidings.domain.clock import now_ms
from tidings.domain.events import Envelope
from tidings.service import Tidings
from tidings.storage import partitions
from tidings.storage.partitions import TABLES, ranges
from tidings.storage.postgres import PostgresDatabase
from tidings.storage.schema import events, metadata

pytestmark = pytest.mark.asyncio


async def test_migrations_match_the_schema_module(settings: Settings) -> None:
    """On SQLite exactly; on PostgreSQL but for what partitioning changes (migration
    0013): the partitions themselves, and the constraints a partitioned table cannot keep
    (two unique constraints become plain indexes, the foreign key to events goes)."""
    tidings = Tidings.from_settings(settings)
    try:
        await tidings.prepare_database()

        def differences(conn: Connection) -> list[object]:
            postgres = conn.dialect.name == "postgresql"
            partitions = set(conn.execute(text(PARTITIONS)).scalars()) if postgres else set()
            context = MigrationContext.configure(
                conn,
                opts={"include_name": lambda name, kind, _: name not in partitions},
            )
            return list(compare_metadata(context, metadata))

        found = await tidings.store.db.read(differences)  # type: ignore[attr-defined]
    finally:
        await tidings.close()
    if settings.resolved_database_url.startswith("sqlite"):
        assert found == []
    else:
        assert sorted(_described(d) for d in found) == PARTITIONING_CHANGES


PARTITIONS = "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid"
PARTITIONING_CHANGES = [
    ("add_constraint", "events", ("id",)),
    ("add_constraint", "events", ("tenant_id", "idempotency_key")),
    ("add_fk", "deliveries", ("event_seq",)),
    ("remove_index", "events", ("id",)),
    ("remove_index", "events", ("tenant_id", "idempotency_key")),
]


def _described(difference: Any) -> tuple[str, str, tuple[str, ...]]:
    kind, item = difference[0], difference[1]
    return kind, item.table.name, tuple(c.name for c in item.columns)


@pytest.fixture
async def partitioned(settings: Settings) -> AsyncIterator[tuple[Tidings, PostgresDatabase]]:
    """PostgreSQL with ranges of 5 keys made ahead: (MINVALUE, 1), (1, 6), (6, 11)."""
    if not settings.resolved_database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL partitions")
    tidings = Tidings.from_settings(settings.model_copy(update={"partition_rows": 5}))
    try:
        await tidings.prepare_database()
        db = tidings.store.db  # type: ignore[attr-defined]
        assert isinstance(db, PostgresDatabase)
        yield tidings, db
    finally:
        await tidings.close()


async def test_partitions_are_made_ahead_and_rows_past_them_land_in_default(
    partitioned: tuple[Tidings, PostgresDatabase],
) -> None:
    """Tables are partitioned by key ranges made ahead of each sequence; a row past them
    (maintenance lagging) lands in DEFAULT, and the range made next takes it out."""
    tidings, db = partitioned

    def bounds(conn: Connection) -> dict[str, list[tuple[int | None, int]]]:
        return {t.table: [(p.low, p.high) for p in ranges(conn, t.table)] for t in TABLES}

    made = await db.read(bounds)
    assert made == {t.table: [(None, 1), (1, 6), (6, 11)] for t in TABLES}
    tenant = await tidings.store.keys.ensure_tenant("acme")
    await _set_next_seq(db, 21)
    event, _ = await tidings.emit(tenant.id, "client.created", {"n": 1})
    assert event.seq == 21
    assert await _tables_of(db) == [(21, "events_default")]
    # events: 11-16, 16-21, 21-26 (taking row 21 out of DEFAULT), 26-31, 31-36
    assert await tidings.store.retention.prepare_partitions(5) == 5
    assert await _tables_of(db) == [(21, "events_p21")]
    again = await tidings.store.events.get_event(tenant.id, event.id)
    assert again is not None and again.seq == 21


async def test_a_row_written_into_default_while_its_range_is_made_moves_in_with_the_rest(
    partitioned: tuple[Tidings, PostgresDatabase], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Maintenance lagging, an emit commits into DEFAULT while the range it belongs to is
    being made: the range still attaches, holding both rows (the row used to be left in
    DEFAULT, so ATTACH refused the range and a worker starting then exited)."""
    tidings, db = partitioned
    monkeypatch.setattr(partitions, "LOCK_TIMEOUT", "30s")  # the wait below is the point
    tenant = await tidings.store.keys.ensure_tenant("acme")
    await _set_next_seq(db, 12)  # in DEFAULT, and in the next range made: 11-16
    await tidings.emit(tenant.id, "client.created", {"n": 1})
    async with db.engine.begin() as emitting:
        await emitting.execute(insert(events).values(**_event_row(tenant.id, "evt_late")))
        making = asyncio.create_task(tidings.store.retention.prepare_partitions(5))
        await eventually(lambda: _waiting_on(db, "events_default"))
    await making
    assert await _tables_of(db) == [(12, "events_p11"), (13, "events_p11")]


async def test_a_transaction_that_read_default_and_then_writes_it_is_not_deadlocked(
    partitioned: tuple[Tidings, PostgresDatabase], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim reads DEFAULT (its lease count scans every partition), then writes it;
    a range being made meanwhile waits for it instead of holding a lock the write
    waits for (a deadlock: PostgreSQL kills one of the two after a second)."""
    tidings, db = partitioned
    monkeypatch.setattr(partitions, "LOCK_TIMEOUT", "30s")
    tenant = await tidings.store.keys.ensure_tenant("acme")
    await _set_next_seq(db, 12)
    async with db.engine.begin() as claiming:
        await claiming.execute(text("SELECT count(*) FROM events"))
        making = asyncio.create_task(tidings.store.retention.prepare_partitions(5))
        await eventually(lambda: _waiting_on(db, "events_default"))
        await claiming.execute(insert(events).values(**_event_row(tenant.id, "evt_claim")))
    await making
    assert await _tables_of(db) == [(12, "events_p11")]


async def test_a_partition_that_cannot_be_made_stops_neither_a_start_nor_retention(
    partitioned: tuple[Tidings, PostgresDatabase],
) -> None:
    """The database refuses new tables (an event trigger, as a DBA's policy might): a
    process starts all the same, the retention loop logs each round and goes on (it used
    to crash the process within seconds), and emits land in DEFAULT meanwhile."""
    tidings, db = partitioned
    for statement in REFUSE_NEW_TABLES:
        await db.write(functools.partial(_run, sql=statement))
    await _set_next_seq(db, 12)
    stop = asyncio.Event()
    with capture_logs() as logs:
        await tidings.prepare_database()
        pruning = asyncio.create_task(
            run_pruner(
                tidings.store.retention,
                tidings.store.queue,
                stop,
                retention_days=30,
                body_retention_days=7,
                batch=100,
                interval=0.01,
                partition_rows=5,
            )
        )

        async def failed_rounds() -> bool:
            return [e["event"] for e in logs].count("partitions_not_made") >= 3

        await eventually(failed_rounds)
        assert not pruning.done()
        stop.set()
        await pruning
    tenant = await tidings.store.keys.ensure_tenant("acme")
    await tidings.emit(tenant.id, "client.created", {"n": 1})
    assert await _tables_of(db) == [(12, "events_default")]


async def test_a_table_whose_range_cannot_be_made_holds_back_only_its_own(
    partitioned: tuple[Tidings, PostgresDatabase],
) -> None:
    """A lasting obstacle on one table (a table squatting the name of events' next range)
    does not keep the others' ranges from being made (it used to stop the round at the
    first table); the failure is raised once they are, and /metrics shows which table is
    short of room."""
    tidings, db = partitioned
    await _set_next_key(db, "events", "seq", 12)
    await _set_next_key(db, "deliveries", "id", 12)
    await db.write(functools.partial(_run, sql="CREATE TABLE events_p11 (n int)"))
    with pytest.raises(ExceptionGroup) as raised:
        await tidings.store.retention.prepare_partitions(5)
    [failure] = raised.value.exceptions
    assert "events_p11" in str(failure)

    def highs(conn: Connection) -> dict[str, int]:
        return {t.table: ranges(conn, t.table)[-1].high for t in TABLES}

    assert await db.read(highs) == {"events": 11, "deliveries": 26, "attempts": 11}
    body, _ = await tidings.metrics.render(tidings.store)
    headroom = {
        line.split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in body.decode().splitlines()
        if line.startswith("tidings_partition_headroom_keys{")
    }
    assert headroom == {"events": -1, "deliveries": 14, "attempts": 10}


REFUSE_NEW_TABLES = (
    """CREATE FUNCTION refuse_new_tables() RETURNS event_trigger LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION 'no new tables here'; END $$""",
    """CREATE EVENT TRIGGER refuse_new_tables ON ddl_command_start
        WHEN TAG IN ('CREATE TABLE') EXECUTE FUNCTION refuse_new_tables()""",
)


def _run(conn: Connection, sql: str) -> None:
    conn.execute(text(sql))


async def _set_next_seq(db: PostgresDatabase, seq: int) -> None:
    await _set_next_key(db, "events", "seq", seq)


async def _set_next_key(db: PostgresDatabase, table: str, column: str, key: int) -> None:
    """The key ``table``'s sequence hands out next."""
    set_key = text("SELECT setval(pg_get_serial_sequence(:table, :column), :last)")
    params = {"table": table, "column": column, "last": key - 1}
    await db.write(lambda conn: conn.execute(set_key, params))


async def _tables_of(db: PostgresDatabase) -> list[tuple[int, str]]:
    """Every event's seq and the partition that holds it."""
    found = text("SELECT seq, tableoid::regclass::text FROM events ORDER BY seq")
    return await db.read(lambda conn: [(int(q), str(t)) for q, t in conn.execute(found)])


def _event_row(tenant_id: str, event_id: str) -> dict[str, Any]:
    """An event's row as an emit stores it, written here by a transaction of the test's."""
    envelope = Envelope(event_id, "client.created", now_ms(), tenant_id, {})
    return {
        "id": event_id,
        "tenant_id": tenant_id,
        "type": envelope.type,
        "created_ms": envelope.created_ms,
        "body": envelope.to_json(),
    }


async def _waiting_on(db: PostgresDatabase, table: str) -> bool:
    waiting = "SELECT count(*) FROM pg_locks WHERE relation = to_regclass(:table) AND NOT granted"
    found = await db.read(lambda conn: conn.execute(text(waiting), {"table": table}).scalar())
    return bool(found)


async def test_the_emit_function_locks_the_stream_the_rest_of_the_code_locks() -> None:
    """Migration 0008's frozen text must name the same advisory lock as ``STREAM_LOCK``
    (records of FIFO deliveries and re-queues take it): two names would be two locks."""
    from importlib import import_module

    from tidings.storage.postgres import STREAM_LOCK

    migration = import_module("tidings.migrations.versions.0008_emit_function")
    assert f"hashtextextended('{STREAM_LOCK}' || p_tenant, 0)" in migration.EMIT_V1


async def test_a_server_that_acknowledges_commits_before_writing_them_is_named(
    settings: Settings,
) -> None:
    """The test cluster runs with ``synchronous_commit=off`` (see tests/support/postgres.py):
    tidings must say at start that a crash of such a server loses acknowledged events."""
    if not settings.resolved_database_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL setting")
    tidings = Tidings.from_settings(settings)
    try:
        with capture_logs() as logs:
            await tidings.store.migrate()
    finally:
        await tidings.close()
    assert [e["synchronous_commit"] for e in logs if e["event"] == "commits_not_durable"] == ["off"]


async def test_downgrading_the_dialects_keeps_every_lane_and_refuses_what_it_would_drop(
    settings: Settings,
) -> None:
    """Migration 0010's downgrade drops its columns in place: copying the table (as a batch
    rebuild does on SQLite) would cascade-delete every lane. It refuses while a
    subscription uses what the older code cannot honour."""
    from alembic import command
    from sqlalchemy import text

    from tidings.storage.migrate import alembic_config

    tidings = Tidings.from_settings(settings)
    try:
        await tidings.store.migrate()
        tenant = await tidings.store.keys.ensure_tenant("acme")
        plain, _ = await tidings.create_subscription(tenant.id, "http://127.0.0.1:9/a", ["*"])
        body, _ = await tidings.create_subscription(
            tenant.id, "http://127.0.0.1:9/b", ["*"], signature_scheme="hmac-body"
        )
        db = tidings.store.db  # type: ignore[attr-defined]

        def downgrade(conn: Connection) -> None:
            command.downgrade(alembic_config(conn), "0009")

        with pytest.raises(RuntimeError, match="cannot honour"):
            await db.write(downgrade)
        await tidings.store.subscriptions.delete(tenant.id, body.id)
        await db.write(downgrade)
        lanes = await db.read(
            lambda conn: conn.execute(text("SELECT subscription_id FROM lanes")).all()
        )
        assert [row[0] for row in lanes] == [plain.id]
        await tidings.store.migrate()
        again = await tidings.store.subscriptions.get(tenant.id, plain.id)
        assert again is not None and again.signature_scheme.value == "hmac"
    finally:
        await tidings.close()
