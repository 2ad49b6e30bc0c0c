"""secret rotation grace period and asymmetric public keys

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("previous_secret_enc", sa.Text(), nullable=True))
        batch.add_column(sa.Column("previous_secret_expires_ms", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("public_key", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("public_key")
        batch.drop_column("previous_secret_expires_ms")
        batch.drop_column("previous_secret_enc")
