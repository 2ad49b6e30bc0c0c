"""indexes for the portal: attempts per tenant over time

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


def downgrade() -> None:
    op.drop_index("ix_attempts_tenant_created", table_name="attempts")
