"""tidings_claim_v1: a PostgreSQL claim on lanes without cluster-wide limits in one call

Revision ID: 0014
Revises: 0013

A claim locked its due lanes in one statement of a transaction, then leased and moved the
lanes on in a second: BEGIN, two statements and COMMIT, the lanes locked across three
round trips and whatever the worker's event loop did between them. Its plan (how many
to take from each lane) is made by the worker between the two, from the lanes it found.

``tidings_claim_v1`` takes that plan, made from the lanes' unlocked look, and does the
rest in one call: it locks the planned lanes that are still due (``SKIP LOCKED``: a lane
another claim holds is left to it), leases up to the planned number of claimable
deliveries of each, moves the lanes on (served time, and the next due time: the earliest
claimable delivery not leased now, or the lease's end if it took from the lane), and
returns what sending the leased deliveries takes. Called outside a transaction, the lanes
are locked only while it runs.

Why two statements inside it, not one: each statement of a VOLATILE function takes a
fresh snapshot (at read committed, which the hot connections set). The second one's
snapshot is taken after the lanes are locked, so it sees every delivery made claimable
before the lock, and a wake that comes later (every path that makes a delivery claimable
wakes its lane, taking the lane's row lock) waits for the function to end. A single
statement's snapshot would predate its lock: a delivery made claimable in between would
be missed, and its lane parked past it.

Lanes with ``maxConcurrency`` or ``rateLimit`` keep the transaction: parking them needs
the count of what was taken and the lane's token bucket.
"""

from tidings.migrations import _ops

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

CLAIM_V1 = """
CREATE OR REPLACE FUNCTION tidings_claim_v1(
    p_subs text[], p_counts int[], p_until bigint, p_token text, p_now bigint)
RETURNS TABLE (id bigint, attempts int, ordering_key text, paused_ms bigint,
               subscription_id text, event_id text, tenant_id text, created_ms bigint,
               body text, trace_context text, url text, secret_enc text,
               previous_secret_enc text, previous_secret_expires_ms bigint,
               max_concurrency int, rate_limit float8, signature_scheme text,
               retry_policy text, headers_enc text, propagate_trace bool,
               transformation text, event_type text)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    v_locked text[];
BEGIN
    SELECT array_agg(k.subscription_id) INTO v_locked FROM (
        SELECT l.subscription_id FROM lanes AS l
        WHERE l.subscription_id = ANY(p_subs) AND l.next_due_ms <= p_now
        ORDER BY l.subscription_id FOR UPDATE OF l SKIP LOCKED) AS k;
    IF v_locked IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH taken AS (
        UPDATE deliveries SET due_ms = p_until, claim_token = p_token
        WHERE deliveries.id = ANY(ARRAY(
            SELECT c.id FROM unnest(p_subs, p_counts) AS plan(sub, n) CROSS JOIN LATERAL (
                SELECT d.id FROM deliveries AS d
                WHERE d.subscription_id = plan.sub AND d.status = 'pending' AND NOT d.blocked
                  AND d.due_ms <= p_now
                ORDER BY d.due_ms LIMIT plan.n FOR UPDATE SKIP LOCKED) AS c
            WHERE plan.sub = ANY(v_locked)))
        RETURNING *),
    moved AS (
        UPDATE lanes SET
            served_ms = CASE WHEN EXISTS (SELECT 1 FROM taken AS t
                                          WHERE t.subscription_id = lanes.subscription_id)
                             THEN p_now ELSE lanes.served_ms END,
            tokens = NULL, tokens_ms = p_now,
            next_due_ms = least(
                (SELECT min(d.due_ms) FROM deliveries AS d
                 WHERE d.subscription_id = lanes.subscription_id
                   AND d.status = 'pending' AND NOT d.blocked
                   AND d.id <> ALL(ARRAY(SELECT t.id FROM taken AS t))),
                (SELECT max(p_until) FROM taken AS t
                 WHERE t.subscription_id = lanes.subscription_id))
        WHERE lanes.subscription_id = ANY(v_locked)
        RETURNING 1)
    SELECT d.id, d.attempts, d.ordering_key::text, d.paused_ms, d.subscription_id::text,
           e.id::text, e.tenant_id::text, e.created_ms, e.body, e.trace_context::text,
           s.url, s.secret_enc, s.previous_secret_enc, s.previous_secret_expires_ms,
           s.max_concurrency, s.rate_limit, s.signature_scheme::text, s.retry_policy,
           s.headers_enc, s.propagate_trace, s.transformation, e.type::text
    FROM taken AS d JOIN events AS e ON e.seq = d.event_seq
    JOIN subscriptions AS s ON s.id = d.subscription_id
    WHERE e.seq = ANY(ARRAY(SELECT t.event_seq FROM taken AS t));
END
$fn$
"""


def upgrade() -> None:
    _ops.on_postgresql(CLAIM_V1)


def downgrade() -> None:
    _ops.drop_function("tidings_claim_v1(text[], int[], bigint, text, bigint)")
