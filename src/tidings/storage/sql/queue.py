"""The delivery queue's SQL, shared by both connectors, and the pieces around it.

Statements use ``:name`` parameters: the SQLite connector runs them on ``sqlite3`` as
they are, the PostgreSQL one numbers them for asyncpg. Where the two dialects differ
(lists of ids, row locks), the statement has a ``{placeholder}`` each fills in; on
PostgreSQL lists are arrays compared with ``= ANY``, which the planner turns into
primary-key lookups whatever its guess of the list's length.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, func, select, text, update

from tidings.domain.clock import now_ms
from tidings.domain.scheduling import LaneState, LaneUpdate
from tidings.domain.signatures import SignatureScheme
from tidings.storage.records import AttemptOutcome, ClaimedDelivery, WorkerLane
from tidings.storage.rows import previous_secret, record_of, retry_rules_of
from tidings.storage.rules import LaneWakes, attempt_outcome, recorded_status
from tidings.storage.schema import CLAIMABLE, LEASED, UNFINISHED, deliveries, lane_stats
from tidings.storage.sql.database import SQLPart

LANE_STATS_TTL_MS = 60_000
"""A worker's figures count for a minute after it last reported (it reports every few s)."""

DUE_LANES = """
    SELECT l.subscription_id, l.tenant_id, l.tokens, l.tokens_ms,
           s.max_concurrency, s.rate_limit
    FROM lanes AS l JOIN subscriptions AS s ON s.id = l.subscription_id
    WHERE l.next_due_ms <= :now AND s.enabled AND {skip}
    ORDER BY l.served_ms LIMIT :lanes {lock}
"""
LEASED_NOW = f"""
    SELECT count(*), min(due_ms) FROM deliveries
    WHERE subscription_id = :sub AND {LEASED} AND due_ms > :now
"""
TAKE = f"""
    UPDATE deliveries SET due_ms = :lease_until, claim_token = :token
    WHERE id IN (
        SELECT id FROM deliveries
        WHERE subscription_id = :sub AND {CLAIMABLE} AND due_ms <= :now
        ORDER BY due_ms LIMIT :n)
    RETURNING id
"""
NEXT_DUE = f"SELECT min(due_ms) FROM deliveries WHERE subscription_id = :sub AND {CLAIMABLE}"
UPDATE_LANE = """
    UPDATE lanes SET served_ms = coalesce(:served, served_ms), tokens = :tokens,
                     tokens_ms = :now, next_due_ms = :due
    WHERE subscription_id = :sub
"""
DETAILS = """
    SELECT d.id, d.attempts, d.ordering_key, d.paused_ms, d.subscription_id,
           e.id AS event_id, e.tenant_id, e.created_ms, e.body, e.trace_context,
           s.url, s.secret_enc, s.previous_secret_enc, s.previous_secret_expires_ms,
           s.max_concurrency, s.rate_limit, s.signature_scheme, s.retry_policy, s.headers_enc,
           s.propagate_trace, s.transformation, e.type AS event_type
    FROM {deliveries} AS d JOIN events AS e ON e.seq = d.event_seq
    JOIN subscriptions AS s ON s.id = d.subscription_id
    WHERE {ids}
"""
ENABLED = "SELECT id, enabled FROM subscriptions WHERE {ids}"
INSERT_ATTEMPT = """
    INSERT INTO attempts (delivery_id, tenant_id, event_id, subscription_id, attempt, outcome,
                          status_code, elapsed_ms, response_body, error, created_ms)
    VALUES (:delivery_id, :tenant_id, :event_id, :subscription_id, :attempt, :outcome,
            :status_code, :elapsed_ms, :response_body, :error, :created_ms)
"""
RECORD = """
    UPDATE deliveries SET status = :b_status, attempts = :b_attempt, due_ms = :b_due,
                          claim_token = NULL, last_status_code = :b_code, updated_ms = :b_now
    WHERE id = :b_id AND claim_token = :b_token
"""
CLAIM_TOKENS = "SELECT id, claim_token FROM deliveries WHERE {ids}"
UNBLOCK_NEXT = f"""
    UPDATE deliveries SET blocked = FALSE
    WHERE id = (
        SELECT id FROM deliveries
        WHERE subscription_id = :sub AND ordering_key IS NOT NULL AND ordering_key = :key
          AND {UNFINISHED}
        ORDER BY position, id LIMIT 1)
      AND blocked
    RETURNING id
"""
RESET_STREAK = """
    UPDATE subscriptions SET consecutive_failures = 0
    WHERE id = :sub AND consecutive_failures <> 0
"""
ADD_FAILURES = """
    UPDATE subscriptions SET consecutive_failures = consecutive_failures + :n
    WHERE id = :sub RETURNING consecutive_failures
"""
WAKE_LANE = """
    UPDATE lanes
    SET next_due_ms = CASE WHEN next_due_ms IS NULL OR next_due_ms > :due THEN :due
                           ELSE next_due_ms END
    WHERE subscription_id = :sub
"""
"""Make sure a lane is looked at by ``:due``. It writes the row even when nothing changes:
the row lock is what orders it against a claim that would otherwise, from a snapshot
without this transaction's rows, park the lane after this transaction made it due."""
STRANDED_HEADS = f"""
    SELECT head.id, head.subscription_id FROM (
        SELECT k.subscription_id, (
            SELECT d.id FROM deliveries AS d
            WHERE d.subscription_id = k.subscription_id AND d.ordering_key IS NOT NULL
              AND d.ordering_key = k.ordering_key AND d.{UNFINISHED}
            ORDER BY d.position, d.id LIMIT 1) AS id
        FROM (SELECT DISTINCT subscription_id, ordering_key FROM deliveries
              WHERE ordering_key IS NOT NULL AND {UNFINISHED} AND blocked) AS k
    ) AS head JOIN deliveries AS first ON first.id = head.id
    WHERE first.blocked
"""
LET_GO = "UPDATE deliveries SET blocked = FALSE WHERE id = :id"
DUE_SOMEWHERE = "SELECT 1 FROM lanes WHERE next_due_ms <= :now LIMIT 1"
QUEUE_STATE = f"""
    SELECT sum((SELECT count(*) FROM deliveries AS d
                WHERE d.subscription_id = l.subscription_id AND d.status = 'pending')),
           min((SELECT min(due_ms) FROM deliveries
                WHERE subscription_id = l.subscription_id AND {CLAIMABLE} AND due_ms <= :now))
    FROM lanes AS l
"""


class SQLQueue(SQLPart):
    """Release, lane figures, queue figures and waking; connectors add the hot path
    (``claim``, ``record``) and ``repair`` on their own drivers."""

    async def release(self, deferrals: Sequence[tuple[ClaimedDelivery, int]]) -> None:
        if not deferrals:
            return
        deferrals = sorted(deferrals, key=lambda pair: pair[0].delivery_id)  # locks in id order
        params = [
            {"b_id": d.delivery_id, "b_token": d.claim_token, "b_due": due} for d, due in deferrals
        ]
        wakes = LaneWakes()
        for claimed, due in deferrals:
            wakes.wake(claimed.subscription_id, due)

        def tx(conn: Any) -> None:
            conn.execute(_RELEASE, params)
            conn.execute(text(WAKE_LANE), list(wakes.params()))
            self._db.announce_work(conn)

        await self._db.write(tx)
        self._db.notify_work()

    async def report_lanes(
        self, worker_id: str, capacity: int, figures: Sequence[WorkerLane], now_ms: int
    ) -> None:
        rows = [
            {
                "worker_id": worker_id,
                "subscription_id": f.subscription_id,
                "tenant_id": f.tenant_id,
                "in_flight": f.in_flight,
                "slot_limit": f.slot_limit,
                "capacity": capacity,
                "updated_ms": now_ms,
            }
            for f in figures
        ]

        def tx(conn: Any) -> None:
            conn.execute(lane_stats.delete().where(lane_stats.c.worker_id == worker_id))
            conn.execute(
                lane_stats.delete().where(lane_stats.c.updated_ms < now_ms - LANE_STATS_TTL_MS)
            )
            if rows:
                conn.execute(lane_stats.insert(), rows)

        await self._db.write(tx)

    async def queue_state(self, now_ms: int) -> tuple[int, int | None]:
        """Pending deliveries, and the due time of the oldest one a claim could take:
        lane by lane, so each count is an index range of one subscription (there is no
        index on status alone; see migration 0009)."""

        def read(conn: Any) -> tuple[int, int | None]:
            count, due = conn.execute(text(QUEUE_STATE), {"now": now_ms}).one()
            return int(count or 0), None if due is None else int(due)

        return await self._db.read(read)

    async def delivery_counts(self) -> dict[str, int]:
        query = select(deliveries.c.status, func.count()).group_by(deliveries.c.status)
        rows = await self._db.read(lambda conn: conn.execute(query).all())
        return {status: int(count) for status, count in rows}

    def notify_work(self) -> None:
        self._db.notify_work()

    async def wait_for_work(self, seconds: float) -> None:
        await self._db.wait_for_work(seconds)

    def forget_work(self) -> bool:
        return self._db.forget_work()


_RELEASE = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("b_id"), deliveries.c.claim_token == bindparam("b_token"))
    .values(due_ms=bindparam("b_due"), claim_token=None)
)


def lane_state(row: Any, leased: int, lease_ends_ms: int | None) -> LaneState:
    return record_of(LaneState, row, leased=int(leased), lease_ends_ms=lease_ends_ms)


def lane_update_params(update: LaneUpdate, now: int) -> dict[str, Any]:
    return {
        "sub": update.subscription_id,
        "served": update.served_ms,
        "tokens": update.tokens,
        "now": now,
        "due": update.next_due_ms,
    }


def claimed_deliveries(rows: Sequence[Any], token: str) -> list[ClaimedDelivery]:
    """The claims, from the connectors' ``DETAILS`` rows."""
    now = now_ms()
    return [
        ClaimedDelivery(
            delivery_id=row["id"],
            claim_token=token,
            attempt=row["attempts"] + 1,
            tenant_id=row["tenant_id"],
            event_id=row["event_id"],
            event_created_ms=row["created_ms"],
            body=row["body"],
            subscription_id=row["subscription_id"],
            url=row["url"],
            secret_enc=row["secret_enc"],
            max_concurrency=row["max_concurrency"],
            rate_limit=row["rate_limit"],
            previous_secret_enc=next(iter(previous_secret(row, now)), None),
            ordering_key=row["ordering_key"],
            paused_ms=row["paused_ms"],
            signature_scheme=SignatureScheme(row["signature_scheme"]),
            retry=retry_rules_of(row["retry_policy"]),
            headers_enc=row["headers_enc"],
            trace_context=row["trace_context"],
            propagate_trace=bool(row["propagate_trace"]),
            event_type=row["event_type"],
            transformation=row["transformation"],
        )
        for row in rows
    ]


def attempt_row(o: AttemptOutcome) -> dict[str, Any]:
    return {
        "delivery_id": o.claimed.delivery_id,
        "tenant_id": o.claimed.tenant_id,
        "event_id": o.claimed.event_id,
        "subscription_id": o.claimed.subscription_id,
        "attempt": o.claimed.attempt,
        "outcome": attempt_outcome(o.result),
        "status_code": o.result.status_code,
        "elapsed_ms": o.result.elapsed_ms,
        "response_body": o.result.response_body,
        "error": o.result.error,
        "created_ms": o.finished_ms,
    }


def delivery_update(o: AttemptOutcome, enabled: bool | None) -> dict[str, Any]:
    return {
        "b_id": o.claimed.delivery_id,
        "b_token": o.claimed.claim_token,
        "b_status": recorded_status(o, enabled),
        "b_attempt": o.claimed.attempt,
        "b_due": o.verdict.next_attempt_ms or o.finished_ms,
        "b_code": o.result.status_code,
        "b_now": o.finished_ms,
    }


def key_params(claimed: ClaimedDelivery) -> dict[str, Any]:
    return {"sub": claimed.subscription_id, "key": claimed.ordering_key}
