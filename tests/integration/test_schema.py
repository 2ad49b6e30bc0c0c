"""The migrations build exactly the tables ``schema.py`` describes, on both databases."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection
from structlog.testing import capture_logs

from tidings.config import Settings
from tidings.service import Tidings
from tidings.storage.schema import metadata

pytestmark = pytest.mark.asyncio


async def test_migrations_match_the_schema_module(settings: Settings) -> None:
    tidings = Tidings.from_settings(settings)
    try:
        await tidings.store.migrate()

        def differences(conn: Connection) -> list[object]:
            context = MigrationContext.configure(conn)
            return list(compare_metadata(context, metadata))

        found = await tidings.store.db.read(differences)  # type: ignore[attr-defined]
    finally:
        await tidings.close()
    assert found == []


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
