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
