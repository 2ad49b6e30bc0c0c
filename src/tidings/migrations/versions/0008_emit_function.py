"""PostgreSQL: an emit in one round trip (tidings_emit_v1); nothing on SQLite

Revision ID: 0008
Revises: 0007

An emit holds its tenant's stream lock from the lock to the commit. Sent statement by
statement, that hold included three client round trips, each waiting for the API's event
loop: under load every emit of the tenant queued behind the slowest of them. In a function
the lock is held for the server's work alone. A VOLATILE function's statements each take a
new snapshot, so the FIFO lookup sees the rows of the emit that held the lock before.

The function's text is history, like any migration: a change to how an event is queued
is a new migration with ``tidings_emit_v2``.
"""

from tidings.migrations import _ops

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

EMIT_V1 = """
CREATE OR REPLACE FUNCTION tidings_emit_v1(
    p_id text, p_tenant text, p_type text, p_created bigint, p_body text,
    p_request_hash text, p_ordering_key text, p_now bigint)
RETURNS TABLE (o_seq bigint, o_lanes text[])
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_seq bigint;
    v_key text := coalesce(p_ordering_key, '');
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('tidings.events:' || p_tenant, 0));
    INSERT INTO events (id, tenant_id, type, created_ms, body, request_hash, ordering_key)
    VALUES (p_id, p_tenant, p_type, p_created, p_body, p_request_hash, p_ordering_key)
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
            FROM subscriptions AS s
            WHERE s.tenant_id = p_tenant
              AND (s.enabled OR s.disabled_reason IN ('breaker', 'manual'))
              AND EXISTS (
                  SELECT 1 FROM json_array_elements_text(s.event_types::json) AS p(v)
                  WHERE p.v = '*' OR p.v = p_type
                     OR (right(p.v, 2) = '.*' AND starts_with(p_type, left(p.v, -1))))
        ) AS matched
        RETURNING subscription_id, status, blocked)
    SELECT v_seq, coalesce(
        array_agg(DISTINCT subscription_id::text) FILTER (WHERE status = 'pending' AND NOT blocked),
        '{}')
    FROM queued;
END
$fn$
"""
"""Lock the tenant's stream, insert the event, queue it for every subscription that wants
it (as ``QUEUE_ROWS``); return its seq and the lanes that now have claimable work."""


def upgrade() -> None:
    _ops.on_postgresql(EMIT_V1)


def downgrade() -> None:
    _ops.drop_function("tidings_emit_v1(text, text, text, bigint, text, text, text, bigint)")
