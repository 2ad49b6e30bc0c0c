"""programmable subscriptions: filter and transformation columns, tidings_emit_v3

Revision ID: 0012
Revises: 0011

``subscriptions.filter`` is a subscription's filter as compact JSON (NULL: none);
``subscriptions.transformation`` its JavaScript (NULL: none). ``tenants.filters_version``
counts changes to which of the tenant's subscriptions are filtered and how: the fan-out
keeps each tenant's filters compiled in memory and checks, in the emit's transaction,
that they are still the ones it evaluated. ``ix_subscriptions_unfiltered`` lets the SQL
part of the fan-out read a tenant's unfiltered subscriptions alone, however many filtered
ones it has.

PostgreSQL emits through ``tidings_emit_v3``: v1 (migration 0008) with the trace context
written with the event (v2's second write of the row is gone), and two arguments more.
The caller evaluates the tenant's filters before the call, outside the stream lock, and
passes the version of the filters it used and the filtered subscriptions that matched.
Under the lock the function compares that version with the tenant's: if they differ it
stores nothing and returns the current version (the caller reloads the filters and calls
again); else it queues the event for every unfiltered subscription that wants it, as v1
does (found through the partial index), and for the matched filtered ones (by id). Every
change of a filter takes the same stream
lock, so no filter changes between the comparison and the fan-out. v1 and v2 stay for
processes of the previous release during a rolling upgrade: they queue an event for every
subscription whose patterns match, filtered or not (late filters are at-least-once too).
"""

import sqlalchemy as sa
from alembic import op

from tidings.migrations import _ops

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

EMIT_V3 = """
CREATE OR REPLACE FUNCTION tidings_emit_v3(
    p_id text, p_tenant text, p_type text, p_created bigint, p_body text,
    p_request_hash text, p_ordering_key text, p_trace_context text, p_now bigint,
    p_filters_version bigint, p_matched text[])
RETURNS TABLE (o_seq bigint, o_lanes text[], o_filters_version bigint)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_seq bigint;
    v_key text := coalesce(p_ordering_key, '');
    v_version bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('tidings.events:' || p_tenant, 0));
    SELECT t.filters_version INTO v_version FROM tenants AS t WHERE t.id = p_tenant;
    IF v_version IS DISTINCT FROM p_filters_version THEN
        RETURN QUERY SELECT NULL::bigint, NULL::text[], v_version;
        RETURN;
    END IF;
    INSERT INTO events (id, tenant_id, type, created_ms, body, request_hash, ordering_key,
                        trace_context)
    VALUES (p_id, p_tenant, p_type, p_created, p_body, p_request_hash, p_ordering_key,
            p_trace_context)
    RETURNING seq INTO v_seq;
    RETURN QUERY WITH queued AS (
        INSERT INTO deliveries (tenant_id, event_seq, subscription_id, status, attempts,
                                due_ms, created_ms, updated_ms, ordering_key, position,
                                blocked)
        SELECT tenant_id, v_seq, id, status, 0, p_now, p_now, p_now, ordering_key,
               CASE WHEN ordering_key IS NOT NULL THEN coalesce(last, -1) + 1 END,
               CASE WHEN last IS NOT NULL THEN TRUE ELSE FALSE END
        FROM (
            SELECT s.tenant_id, s.id,
                   CASE WHEN s.enabled THEN 'pending' ELSE 'paused' END AS status,
                   CASE WHEN s.ordering = 'fifo' THEN v_key END AS ordering_key,
                   CASE WHEN s.ordering = 'fifo' THEN (
                       SELECT max(p.position) FROM deliveries AS p
                       WHERE p.subscription_id = s.id AND p.ordering_key IS NOT NULL
                         AND p.ordering_key = v_key AND p.status IN ('pending', 'paused')
                   ) END AS last
            FROM (
                SELECT * FROM subscriptions AS u
                WHERE u.tenant_id = p_tenant AND u.filter IS NULL
                UNION ALL
                SELECT * FROM subscriptions AS f
                WHERE f.id = ANY(p_matched) AND f.tenant_id = p_tenant AND f.filter IS NOT NULL
            ) AS s
            WHERE (s.enabled OR s.disabled_reason IN ('breaker', 'manual'))
              AND EXISTS (
                  SELECT 1 FROM json_array_elements_text(s.event_types::json) AS p(v)
                  WHERE p.v = '*' OR p.v = p_type
                     OR (right(p.v, 2) = '.*' AND starts_with(p_type, left(p.v, -1))))
        ) AS matched
        RETURNING subscription_id, status, blocked)
    SELECT v_seq, coalesce(
        array_agg(DISTINCT subscription_id::text) FILTER (WHERE status = 'pending' AND NOT blocked),
        '{}'), v_version
    FROM queued;
END
$fn$
"""
"""Lock the tenant's stream; unless the tenant's filters changed since the caller read
them, insert the event and queue it for every unfiltered subscription that wants it and
for the filtered ones in ``p_matched`` (as ``QUEUE_ROWS``); return its seq, the lanes that
now have claimable work, and the filters' version (a NULL seq: they changed, call again)."""


def upgrade() -> None:
    # plain ADD COLUMN on both databases (no batch copy of a table, see 0010 and 0011)
    op.add_column("subscriptions", sa.Column("filter", sa.Text(), nullable=True))
    op.add_column("subscriptions", sa.Column("transformation", sa.Text(), nullable=True))
    op.add_column(
        "tenants",
        sa.Column("filters_version", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.create_index(
        "ix_subscriptions_unfiltered",
        "subscriptions",
        ["tenant_id"],
        sqlite_where=sa.text("filter IS NULL"),
        postgresql_where=sa.text("filter IS NULL"),
    )
    _ops.on_postgresql(EMIT_V3)


def downgrade() -> None:
    _ops.refuse_downgrade_while(
        "SELECT count(*) FROM subscriptions WHERE filter IS NOT NULL OR transformation IS NOT NULL",
        "subscriptions have filters or transformations that the older version cannot "
        "honour (it would deliver every event to them, unchanged): remove them before "
        "downgrading",
    )
    _ops.drop_function(
        "tidings_emit_v3(text, text, text, bigint, text, text, text, text, bigint, bigint, text[])"
    )
    op.drop_index("ix_subscriptions_unfiltered", "subscriptions")
    _ops.drop_columns_in_place("tenants", "filters_version")
    _ops.drop_columns_in_place("subscriptions", "transformation", "filter")
