"""tracing: events.trace_context, subscriptions.propagate_trace, tidings_emit_v2

Revision ID: 0011
Revises: 0010

``events.trace_context`` is the W3C ``traceparent`` of the span that stored the event
(NULL when tracing is off), so an attempt in any worker process joins the event's trace.
``subscriptions.propagate_trace`` sends it on (``propagateTrace``).

PostgreSQL emits through ``tidings_emit_v1`` (migration 0008), whose text is frozen.
``tidings_emit_v2`` takes the trace context too and is a wrapper, not a copy: it calls v1
unchanged (the stream lock, the event row, the fan-out: one tested text, no second copy
to drift) and, when there is a trace context, sets it on the row v1 just inserted, in the
same transaction (no claim can see the event without it). With tracing off (a NULL
context) v2 is exactly v1; with it on, an emit writes the event row twice (an update of
a row of its own transaction, on a column no index covers). v1 stays, so processes of the
previous release keep emitting during a rolling upgrade (their events have no context).
"""

import sqlalchemy as sa
from alembic import op

from tidings.migrations import _ops

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

EMIT_V2 = """
CREATE OR REPLACE FUNCTION tidings_emit_v2(
    p_id text, p_tenant text, p_type text, p_created bigint, p_body text,
    p_request_hash text, p_ordering_key text, p_trace_context text, p_now bigint)
RETURNS TABLE (o_seq bigint, o_lanes text[])
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_seq bigint;
    v_lanes text[];
BEGIN
    SELECT e.o_seq, e.o_lanes INTO v_seq, v_lanes
    FROM tidings_emit_v1(p_id, p_tenant, p_type, p_created, p_body, p_request_hash,
                         p_ordering_key, p_now) AS e;
    IF p_trace_context IS NOT NULL THEN
        UPDATE events SET trace_context = p_trace_context WHERE seq = v_seq;
    END IF;
    RETURN QUERY SELECT v_seq, v_lanes;
END
$fn$
"""
"""``tidings_emit_v1``, then the event's trace context; returns what v1 returns."""


def upgrade() -> None:
    # plain ADD COLUMN on both databases (no batch copy of a large events table)
    op.add_column("events", sa.Column("trace_context", sa.String(64), nullable=True))
    op.add_column(
        "subscriptions",
        sa.Column("propagate_trace", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    _ops.on_postgresql(EMIT_V2)


def downgrade() -> None:
    _ops.drop_function("tidings_emit_v2(text, text, text, bigint, text, text, text, text, bigint)")
    # Nothing is refused: what is dropped is observability only (the older code delivers
    # exactly the same, without traceparent headers)
    _ops.drop_columns_in_place("subscriptions", "propagate_trace")
    _ops.drop_columns_in_place("events", "trace_context")
