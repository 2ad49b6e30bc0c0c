"""indexes for retention pruning

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_events_created", "events", ["created_ms"])
    op.create_index("ix_attempts_created", "attempts", ["created_ms"])


def downgrade() -> None:
    op.drop_index("ix_attempts_created", "attempts")
    op.drop_index("ix_events_created", "events")
