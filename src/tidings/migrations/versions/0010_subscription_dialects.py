"""subscription dialects: signature scheme, retry policy, static headers

Revision ID: 0010
Revises: 0009

``signature_scheme`` was implied by ``public_key`` (set for Ed25519 only); it is a
column now that RSA subscriptions have a public key too. ``retry_policy`` and
``header_names`` are JSON; ``headers_enc`` is the static headers' JSON, encrypted like
the secrets.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch_op:
        batch_op.add_column(
            sa.Column("signature_scheme", sa.String(20), nullable=False, server_default="hmac")
        )
        batch_op.add_column(sa.Column("retry_policy", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("headers_enc", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("header_names", sa.Text(), nullable=True))
    op.execute("UPDATE subscriptions SET signature_scheme = 'ed25519' WHERE public_key IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch_op:
        batch_op.drop_column("header_names")
        batch_op.drop_column("headers_enc")
        batch_op.drop_column("retry_policy")
        batch_op.drop_column("signature_scheme")
