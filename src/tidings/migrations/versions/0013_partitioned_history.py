"""events, deliveries and attempts partitioned by range of their keys (PostgreSQL)

Revision ID: 0013
Revises: 0012

Retention on PostgreSQL drops whole partitions instead of deleting rows. The three tables
are partitioned by range of the keys they already have (``events.seq``, ``deliveries.id``,
``attempts.id``): sequences hand them out in time order, so a range is a span of time,
every primary key stays as it is, and ``WHERE id = :id`` prunes to one partition.

The upgrade copies no row: each table is renamed and attached, as it is, as the first
partition ``[MINVALUE, max + 1)`` of a new partitioned parent with the same columns,
defaults (the same sequence) and indexes; its existing indexes are attached to the
parent's, so only the indexes that replace unique constraints are built. A DEFAULT
partition catches rows past the last range; the ranges ahead are created by tidings at
start and by retention (``storage/partitions.py``), sized by ``TIDINGS_PARTITION_ROWS``.

PostgreSQL wants the partition key in every unique constraint, so two go:
``UNIQUE (events.id)`` becomes the plain index ``ix_events_id`` (ids are ULIDs made by
tidings, never given by callers: 80 random bits per millisecond), and
``UNIQUE (tenant_id, idempotency_key)`` the plain index ``ix_events_idempotency``: every
emit with a key looks the key up and inserts under the tenant's stream lock, which makes
it unique. The foreign key ``deliveries.event_seq -> events.seq`` goes too: dropping a
partition of a referenced table needs a check of every referencing row, and retention
removes a delivery with its event anyway.

SQLite is left as it is (one file, row deletes; see docs/scaling.md), except for the
small partial index ``ix_deliveries_pending`` both databases get: retention asks it
which events still have pending deliveries.

The downgrade copies each parent's rows back into one plain table (a data copy, unlike
the upgrade) and restores the constraints; it fails if the rows break them.
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

TABLES = (("events", "seq"), ("deliveries", "id"), ("attempts", "id"))
"""Each partitioned table and its partition key (its primary key)."""
REPLACED = {
    "events": (
        ("events_id_key", "ix_events_id", "(id)", "UNIQUE (id)"),
        (
            "uq_events_idempotency",
            "ix_events_idempotency",
            "(tenant_id, idempotency_key)",
            "UNIQUE (tenant_id, idempotency_key)",
        ),
    )
}
"""Unique constraints a partitioned parent cannot keep: (constraint, index that replaces
it, its columns, the constraint's definition for the downgrade)."""
EVENT_FK = "deliveries_event_seq_fkey"
PENDING = "status = 'pending'"


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_pending",
        "deliveries",
        ["event_seq"],
        sqlite_where=sa.text(PENDING),
        postgresql_where=sa.text(PENDING),
    )
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"ALTER TABLE deliveries DROP CONSTRAINT {EVENT_FK}")
    for table, key in TABLES:
        _partition(table, key)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, key in TABLES:
            _flatten(table, key)
        op.execute(
            f"ALTER TABLE deliveries ADD CONSTRAINT {EVENT_FK} FOREIGN KEY (event_seq) "
            "REFERENCES events (seq) ON DELETE CASCADE"
        )
    op.drop_index("ix_deliveries_pending", "deliveries")


def _partition(table: str, key: str) -> None:
    """Make ``table`` the first partition of a new partitioned ``table``."""
    bind = op.get_bind()
    first = f"{table}_p0"
    top = bind.execute(sa.text(f"SELECT coalesce(max({key}), 0) FROM {table}")).scalar_one()
    sequence = _sequence(table, key)
    indexes = _plain_indexes(table)
    for constraint, *_ in REPLACED.get(table, ()):
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {constraint}")
    op.execute(f"ALTER TABLE {table} RENAME TO {first}")
    op.execute(f"ALTER TABLE {first} RENAME CONSTRAINT {table}_pkey TO {first}_pkey")
    for n, (name, _) in enumerate(indexes):
        op.execute(f"ALTER INDEX {name} RENAME TO {first}_ix{n}")
    op.execute(f"CREATE TABLE {table} (LIKE {first} INCLUDING DEFAULTS) PARTITION BY RANGE ({key})")
    op.execute(f"ALTER SEQUENCE {sequence} OWNED BY {table}.{key}")
    op.execute(f"ALTER TABLE {first} ALTER COLUMN {key} DROP DEFAULT")
    op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY ({key})")
    for _, definition in indexes:
        op.execute(definition)
    for _, index, columns, _ in REPLACED.get(table, ()):
        op.execute(f"CREATE INDEX {index} ON {table} {columns}")
    for name, definition in _foreign_keys(first):
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")
    op.execute(
        f"ALTER TABLE {table} ATTACH PARTITION {first} FOR VALUES FROM (MINVALUE) TO ({top + 1})"
    )
    op.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")


def _flatten(table: str, key: str) -> None:
    """Copy a partitioned ``table`` into one plain table of the same name."""
    flat = f"{table}_flat"
    sequence = _sequence(table, key)
    replaced = {index for _, index, _, _ in REPLACED.get(table, ())}
    indexes = [(n, d) for n, d in _plain_indexes(table) if n not in replaced]
    foreign = _foreign_keys(table)
    op.execute(f"CREATE TABLE {flat} (LIKE {table} INCLUDING DEFAULTS)")
    op.execute(f"INSERT INTO {flat} SELECT * FROM {table}")
    op.execute(f"ALTER SEQUENCE {sequence} OWNED BY NONE")
    op.execute(f"DROP TABLE {table}")  # and every partition
    op.execute(f"ALTER TABLE {flat} RENAME TO {table}")
    op.execute(f"ALTER SEQUENCE {sequence} OWNED BY {table}.{key}")
    op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY ({key})")
    for constraint, _, _, definition in REPLACED.get(table, ()):
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {constraint} {definition}")
    for _, definition in indexes:
        op.execute(definition.replace(" ON ONLY ", " ON "))
    for name, definition in foreign:
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")


def _sequence(table: str, key: str) -> str:
    found = op.get_bind().execute(
        sa.text("SELECT pg_get_serial_sequence(:table, :key)"), {"table": table, "key": key}
    )
    return str(found.scalar_one())


def _plain_indexes(table: str) -> list[tuple[str, str]]:
    """The indexes of ``table`` that back no constraint: (name, CREATE INDEX statement)."""
    rows = op.get_bind().execute(
        sa.text(
            """
            SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index AS x
            JOIN pg_class AS i ON i.oid = x.indexrelid
            WHERE x.indrelid = CAST(:table AS regclass)
              AND NOT EXISTS (SELECT 1 FROM pg_constraint AS c WHERE c.conindid = x.indexrelid)
            ORDER BY i.relname
            """
        ),
        {"table": table},
    )
    return [(str(name), str(definition)) for name, definition in rows]


def _foreign_keys(table: str) -> list[tuple[str, str]]:
    rows = op.get_bind().execute(
        sa.text(
            """
            SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
            WHERE conrelid = CAST(:table AS regclass) AND contype = 'f' ORDER BY conname
            """
        ),
        {"table": table},
    )
    return [(str(name), str(definition)) for name, definition in rows]
