"""initial schema

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


INDEXES: dict[str, dict[str, list[str]]] = {
    "attempts": {
        "ix_attempts_event": ["event_id", "id"],
        "ix_attempts_subscription": ["subscription_id", "id"],
    },
    "events": {
        "ix_events_tenant_seq": ["tenant_id", "seq"],
        "ix_events_tenant_type_seq": ["tenant_id", "type", "seq"],
    },
    "subscriptions": {"ix_subscriptions_tenant_seq": ["tenant_id", "seq"]},
    "deliveries": {
        "ix_deliveries_event": ["event_seq"],
        "ix_deliveries_status_due": ["status", "due_ms"],
        "ix_deliveries_subscription_status": ["subscription_id", "status"],
    },
}
"""Each table's indexes, created in this order after the table (dropped in the reverse)."""

TABLES = ("attempts", "tenants", "api_keys", "events", "subscriptions", "deliveries")
"""The order the upgrade creates the tables in (the downgrade drops them in the reverse)."""


def _serial(name: str) -> sa.Column[int]:
    """An autoincrementing BIGINT key (INTEGER on SQLite, where it is then the rowid)."""
    return sa.Column(
        name,
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        autoincrement=True,
        nullable=False,
    )


def _tenant_fk() -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"])


def _create_indexes(table: str) -> None:
    with op.batch_alter_table(table, schema=None) as batch_op:
        for name, columns in INDEXES[table].items():
            batch_op.create_index(name, columns, unique=False)


def upgrade() -> None:
    op.create_table(
        "attempts",
        _serial("id"),
        sa.Column("delivery_id", sa.BigInteger(), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("event_id", sa.String(length=40), nullable=False),
        sa.Column("subscription_id", sa.String(length=40), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("elapsed_ms", sa.Integer(), nullable=False),
        sa.Column("response_body", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    _create_indexes("attempts")
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=20), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("revoked_ms", sa.BigInteger(), nullable=True),
        _tenant_fk(),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_hash"),
    )
    op.create_table(
        "events",
        _serial("seq"),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=128), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=True),
        _tenant_fk(),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
        sa.UniqueConstraint("tenant_id", "idempotency_key", name="uq_events_idempotency"),
    )
    _create_indexes("events")
    op.create_table(
        "subscriptions",
        _serial("seq"),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("event_types", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.String(length=20), nullable=True),
        sa.Column("secret_enc", sa.Text(), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        _tenant_fk(),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
    )
    _create_indexes("subscriptions")
    op.create_table(
        "deliveries",
        _serial("id"),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("event_seq", sa.BigInteger(), nullable=False),
        sa.Column("subscription_id", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("due_ms", sa.BigInteger(), nullable=False),
        sa.Column("claim_token", sa.String(length=40), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["event_seq"], ["events.seq"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    _create_indexes("deliveries")


def downgrade() -> None:
    for table in reversed(TABLES):
        if table in INDEXES:
            with op.batch_alter_table(table, schema=None) as batch_op:
                for name in reversed(INDEXES[table]):
                    batch_op.drop_index(name)
        op.drop_table(table)
