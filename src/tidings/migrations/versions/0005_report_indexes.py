"""indexes for the portal: attempts per tenant over time, deliveries by status in event order

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_attempts_tenant_created", "attempts", ["tenant_id", "created_ms", "outcome"]
    )
    op.create_index(
        "ix_deliveries_tenant_status_event", "deliveries", ["tenant_id", "status", "event_seq"]
    )
    # Widened so "this subscription's failed deliveries, newest event first" is one range.
    op.create_index(
        "ix_deliveries_subscription_status_event",
        "deliveries",
        ["subscription_id", "status", "event_seq"],
    )
    op.drop_index("ix_deliveries_subscription_status", table_name="deliveries")


def downgrade() -> None:
    op.create_index(
        "ix_deliveries_subscription_status", "deliveries", ["subscription_id", "status"]
    )
    op.drop_index("ix_deliveries_subscription_status_event", table_name="deliveries")
    op.drop_index("ix_deliveries_tenant_status_event", table_name="deliveries")
    op.drop_index("ix_attempts_tenant_created", table_name="attempts")
