"""Schema migrations with Alembic, run inside the store's own write transaction."""

from __future__ import annotations

from pathlib import Path

import structlog
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text

log = structlog.get_logger("tidings.storage")

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
MIGRATION_LOCK = 7316017


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def upgrade_connection(connection: Connection, revision: str = "head") -> None:
    if connection.dialect.name == "postgresql":
        # Processes starting together must not run the same migration twice.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        warn_if_commits_are_not_durable(connection)
    command.upgrade(alembic_config(connection), revision)


def warn_if_commits_are_not_durable(connection: Connection) -> None:
    """With ``synchronous_commit = off`` PostgreSQL acknowledges a commit before its WAL
    is written, and a server crash loses the last few hundred milliseconds of commits:
    events tidings has already answered 201 for; with ``fsync = off`` a machine crash can
    lose or corrupt anything. Said once, at every process start."""
    found = {
        name: connection.execute(text(f"SHOW {name}")).scalar_one()
        for name in ("synchronous_commit", "fsync")
    }
    if found["synchronous_commit"] == "off" or found["fsync"] == "off":
        log.warning(
            "commits_not_durable",
            **found,
            consequence="a PostgreSQL crash can lose events already acknowledged with 201",
        )
