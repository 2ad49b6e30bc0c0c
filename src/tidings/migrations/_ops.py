"""Steps the migrations share, so each migration says what it changes, not how.

Frozen like the migrations that call them: a migration is history, and what it emits must
never change. Never change what an existing function here emits; a new need is a new
function. Each is a plain function of its arguments and the migration's connection.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


def on_postgresql(statement: str) -> None:
    """Run ``statement`` on PostgreSQL; nothing on SQLite (PL/pgSQL functions and the like)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(statement)


def drop_function(signature: str) -> None:
    """``DROP FUNCTION IF EXISTS <signature>`` on PostgreSQL, e.g. ``f(text, bigint)``."""
    on_postgresql(f"DROP FUNCTION IF EXISTS {signature}")


def refuse_downgrade_while(count: str, reason: str) -> None:
    """Raise ``RuntimeError(reason)`` unless the query ``count`` (a ``SELECT count(*)``)
    finds nothing: rows the older version cannot honour."""
    if op.get_bind().execute(sa.text(count)).scalar_one():
        raise RuntimeError(reason)


def drop_columns_in_place(table: str, *columns: str) -> None:
    """``ALTER TABLE <table> DROP COLUMN <column>`` for each column, in order: in place on
    SQLite too (3.35+), never by a batch copy of the table, which would cascade-delete
    every row that refers to it."""
    for column in columns:
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
