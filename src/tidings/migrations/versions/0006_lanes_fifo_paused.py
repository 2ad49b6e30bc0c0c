"""the scheduler's lanes, FIFO ordering keys, paused deliveries, per-worker lane figures

Revision ID: 0006
Revises: 0005

Deliveries that a breaker trip or a manual disable cancelled before this revision are
paused again where the subscription is still disabled (re-enabling now resumes them), and
marked failed where it was re-enabled meanwhile, so ``recover`` can queue them again.
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

CLAIMABLE = "status = 'pending' AND NOT blocked"
UNFINISHED = "status IN ('pending', 'paused')"
LEASED = "claim_token IS NOT NULL"


def _where(clause: str) -> dict[str, Any]:
    return {"sqlite_where": sa.text(clause), "postgresql_where": sa.text(clause)}


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("ordering_key", sa.String(256), nullable=True))
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("ordering", sa.String(10), nullable=True))
        batch.add_column(sa.Column("disabled_ms", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("ordering_key", sa.String(256), nullable=True))
        batch.add_column(sa.Column("position", sa.BigInteger(), nullable=True))
        batch.add_column(
            sa.Column("blocked", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("paused_ms", sa.BigInteger(), nullable=False, server_default=sa.text("0"))
        )
    op.create_index(
        "ix_deliveries_lane", "deliveries", ["subscription_id", "due_ms"], **_where(CLAIMABLE)
    )
    op.create_index(
        "ix_deliveries_key",
        "deliveries",
        ["subscription_id", "ordering_key", "position", "id"],
        **_where(f"ordering_key IS NOT NULL AND {UNFINISHED}"),
    )
    op.create_index(
        "ix_deliveries_leased", "deliveries", ["subscription_id", "due_ms"], **_where(LEASED)
    )
    op.create_table(
        "lanes",
        sa.Column(
            "subscription_id",
            sa.String(40),
            sa.ForeignKey("subscriptions.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("next_due_ms", sa.BigInteger(), nullable=True),
        sa.Column("served_ms", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("tokens", sa.Float(), nullable=True),
        sa.Column("tokens_ms", sa.BigInteger(), nullable=True),
    )
    op.create_index("ix_lanes_due", "lanes", ["next_due_ms"])
    op.create_table(
        "lane_stats",
        sa.Column("worker_id", sa.String(40), primary_key=True),
        sa.Column("subscription_id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("in_flight", sa.Integer(), nullable=False),
        sa.Column("slot_limit", sa.Integer(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_lane_stats_subscription", "lane_stats", ["subscription_id"])
    op.execute(
        """
        INSERT INTO lanes (subscription_id, tenant_id, next_due_ms, served_ms)
        SELECT s.id, s.tenant_id,
               (SELECT min(d.due_ms) FROM deliveries AS d
                WHERE d.subscription_id = s.id AND d.status = 'pending'), 0
        FROM subscriptions AS s
        """
    )
    op.execute("UPDATE subscriptions SET disabled_ms = updated_ms WHERE NOT enabled")
    paused_again = """
        UPDATE deliveries SET status = '{status}', claim_token = NULL
        WHERE status = 'cancelled' AND subscription_id IN (
            SELECT id FROM subscriptions WHERE {which})
    """
    op.execute(
        paused_again.format(
            status="paused", which="NOT enabled AND disabled_reason IN ('breaker', 'manual')"
        )
    )
    op.execute(paused_again.format(status="failed", which="enabled"))


def downgrade() -> None:
    op.execute("UPDATE deliveries SET status = 'cancelled' WHERE status = 'paused'")
    op.drop_index("ix_lane_stats_subscription", table_name="lane_stats")
    op.drop_table("lane_stats")
    op.drop_index("ix_lanes_due", table_name="lanes")
    op.drop_table("lanes")
    op.drop_index("ix_deliveries_leased", table_name="deliveries")
    op.drop_index("ix_deliveries_key", table_name="deliveries")
    op.drop_index("ix_deliveries_lane", table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("paused_ms")
        batch.drop_column("blocked")
        batch.drop_column("position")
        batch.drop_column("ordering_key")
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("disabled_ms")
        batch.drop_column("ordering")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("ordering_key")
