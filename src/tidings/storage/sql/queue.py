"""The delivery queue's parts both SQL connectors share; each runs its own hot path."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, func, select, update

from tidings.domain.clock import now_ms
from tidings.domain.deliveries import DeliveryStatus
from tidings.storage.records import AttemptOutcome, ClaimedDelivery
from tidings.storage.rows import previous_secret
from tidings.storage.schema import deliveries
from tidings.storage.sql.database import Database


class SQLQueue:
    """Release, queue figures and waking; connectors add ``claim_due`` and ``record``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def release(self, deferrals: Sequence[tuple[ClaimedDelivery, int]]) -> None:
        if not deferrals:
            return
        params = [
            {"b_id": d.delivery_id, "b_token": d.claim_token, "b_due": due} for d, due in deferrals
        ]
        await self._db.write(lambda conn: conn.execute(_RELEASE, params))

    async def queue_state(self, now_ms: int) -> tuple[int, int | None]:
        pending = deliveries.c.status == DeliveryStatus.PENDING.value
        count = select(func.count()).select_from(deliveries).where(pending)
        oldest = select(func.min(deliveries.c.due_ms)).where(pending, deliveries.c.due_ms <= now_ms)

        def read(conn: Any) -> tuple[int, int | None]:
            due = conn.execute(oldest).scalar_one_or_none()
            return int(conn.execute(count).scalar_one()), None if due is None else int(due)

        return await self._db.read(read)

    async def delivery_counts(self) -> dict[str, int]:
        query = select(deliveries.c.status, func.count()).group_by(deliveries.c.status)
        rows = await self._db.read(lambda conn: conn.execute(query).all())
        return {status: int(count) for status, count in rows}

    def notify_work(self) -> None:
        self._db.notify_work()

    async def wait_for_work(self, seconds: float) -> None:
        await self._db.wait_for_work(seconds)


CLAIM_SCAN_FACTOR = 4
"""Due rows looked at per row wanted, so per-subscription room can skip some."""


def claimed_deliveries(
    rows: Sequence[Any], attempts_made: Mapping[int, int], token: str
) -> list[ClaimedDelivery]:
    """Build the claims from the connectors' claim-details rows (a vanished subscription
    reads as disabled), dropping disabled subscriptions'."""
    now = now_ms()
    return [
        ClaimedDelivery(
            delivery_id=row["id"],
            claim_token=token,
            attempt=attempts_made[row["id"]] + 1,
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
        )
        for row in rows
        if row["enabled"]
    ]


def pick_claims(candidates: Sequence[Any], room: Callable[[str], int], limit: int) -> list[int]:
    """Oldest first, at most ``room(sub)`` per subscription and ``limit`` in all."""
    taken: dict[str, int] = {}
    chosen: list[int] = []
    for delivery_id, sub_id in candidates:
        count = taken.get(sub_id, 0)
        if count < room(sub_id):
            taken[sub_id] = count + 1
            chosen.append(delivery_id)
            if len(chosen) == limit:
                break
    return chosen


def streak_changes(outcomes: Sequence[AttemptOutcome]) -> list[tuple[str, int | None]]:
    """Per subscription, in id order: None to reset its failure streak, else failures to add.

    Rows are updated in id order, so two workers recording at once lock them in the same
    order and cannot deadlock. Connectors skip the reset when the streak is already 0,
    so healthy subscriptions do not become a row every record transaction must lock.
    """
    delta: dict[str, int | None] = {}
    for o in outcomes:
        sub_id = o.claimed.subscription_id
        delta[sub_id] = None if o.result.succeeded else (delta.get(sub_id) or 0) + 1
    return sorted(delta.items())


_RELEASE = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("b_id"), deliveries.c.claim_token == bindparam("b_token"))
    .values(due_ms=bindparam("b_due"), claim_token=None)
)


def attempt_row(o: AttemptOutcome) -> dict[str, Any]:
    return {
        "delivery_id": o.claimed.delivery_id,
        "tenant_id": o.claimed.tenant_id,
        "event_id": o.claimed.event_id,
        "subscription_id": o.claimed.subscription_id,
        "attempt": o.claimed.attempt,
        "outcome": "succeeded" if o.result.succeeded else "failed",
        "status_code": o.result.status_code,
        "elapsed_ms": o.result.elapsed_ms,
        "response_body": o.result.response_body,
        "error": o.result.error,
        "created_ms": o.finished_ms,
    }


def delivery_update(o: AttemptOutcome) -> dict[str, Any]:
    return {
        "b_id": o.claimed.delivery_id,
        "b_token": o.claimed.claim_token,
        "b_status": o.verdict.status.value,
        "b_attempt": o.claimed.attempt,
        "b_due": o.verdict.next_attempt_ms or o.finished_ms,
        "b_code": o.result.status_code,
        "b_now": o.finished_ms,
    }
