"""subscription dialects: signature scheme, retry policy, static headers

Revision ID: 0010
Revises: 0009

``signature_scheme`` was implied by ``public_key`` (set for Ed25519 only); it is a
column now that RSA subscriptions have a public key too. ``previous_public_key`` is the
public key that still signs during a rotation's grace period. ``retry_policy`` and
``header_names`` are JSON; ``headers_enc`` is the static headers' JSON, encrypted like
the secrets.

The downgrade refuses while a subscription uses any of it: the older code would sign
``rsa-sha256`` subscriptions as Ed25519 and drop their static headers. It drops the
columns in place (SQLite 3.35+), never by copying the table: a copy would cascade-delete
every subscription's lane.
"""

import sqlalchemy as sa
from alembic import op

from tidings.migrations import _ops

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
        batch_op.add_column(sa.Column("previous_public_key", sa.Text(), nullable=True))
    op.execute("UPDATE subscriptions SET signature_scheme = 'ed25519' WHERE public_key IS NOT NULL")


NEW_COLUMNS = ("previous_public_key", "header_names", "headers_enc", "retry_policy")


def downgrade() -> None:
    _ops.refuse_downgrade_while(
        "SELECT count(*) FROM subscriptions WHERE signature_scheme NOT IN ('hmac', 'ed25519')"
        " OR retry_policy IS NOT NULL OR headers_enc IS NOT NULL",
        "subscriptions use signature schemes, retry policies or static headers that the "
        "older version cannot honour: delete or change them before downgrading",
    )
    _ops.drop_columns_in_place("subscriptions", *NEW_COLUMNS, "signature_scheme")
