"""server-side portal sessions, so signing out and revoking a key end them

Revision ID: 0007
Revises: 0006

Cookies issued before this revision name no session row, so every portal user signs in
again once after upgrading.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_api_keys_tenant", "api_keys", ["tenant_id"])
    op.create_table(
        "portal_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("key_id", sa.String(40), sa.ForeignKey("api_keys.id"), nullable=True),
        sa.Column("can_manage", sa.Boolean(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_portal_sessions_key", "portal_sessions", ["key_id"])
    op.create_index("ix_portal_sessions_expires", "portal_sessions", ["expires_ms"])


def downgrade() -> None:
    op.drop_index("ix_portal_sessions_expires", "portal_sessions")
    op.drop_index("ix_portal_sessions_key", "portal_sessions")
    op.drop_table("portal_sessions")
    op.drop_index("ix_api_keys_tenant", "api_keys")
