"""drop ix_deliveries_status_due: it let one tenant's backlog slow every other claim

Revision ID: 0009
Revises: 0008

A claim takes a lane's due deliveries with ``subscription_id = ? AND status = 'pending'
AND NOT blocked AND due_ms <= ? ORDER BY due_ms``. The lane is an array element, so the
planner cannot see which subscription it is; with one subscription owning most rows it
picked ``(status, due_ms)`` and filtered on the subscription, walking all of that
tenant's due rows to find another's: 350-450 ms per claim with a 1,000,000-delivery
backlog, and every other tenant's wakes queued behind the claim's lane locks.
``ix_deliveries_lane`` serves the claim; the metrics read their figures lane by lane.
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_deliveries_status_due", table_name="deliveries")


def downgrade() -> None:
    op.create_index("ix_deliveries_status_due", "deliveries", ["status", "due_ms"])
