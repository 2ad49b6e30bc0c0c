"""What operators look at (the portal) and the bulk recovery they trigger.

None of this is on the hot path, but every query here is bounded by an index so pages
stay fast with millions of rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, and_, bindparam, exists, func, select, text, update

from tidings.domain.clock import now_ms
from tidings.domain.deliveries import DeliveryStatus
from tidings.storage.records import (
    DeliveryRecord,
    EventFilter,
    EventSummary,
    LaneFigures,
    Page,
    SubscriptionHealth,
)
from tidings.storage.rows import event_of, page_of
from tidings.storage.schema import attempts, deliveries, events, lane_stats, lanes, subscriptions
from tidings.storage.sql.database import SQLPart
from tidings.storage.sql.queue import LANE_STATS_TTL_MS, WAKE_LANE


class SQLReports(SQLPart):
    async def subscription_health(
        self, tenant_id: str, subscription_ids: Sequence[str], sample: int
    ) -> dict[str, SubscriptionHealth]:
        def read(conn: Connection) -> dict[str, SubscriptionHealth]:
            return {sub_id: _health(conn, tenant_id, sub_id, sample) for sub_id in subscription_ids}

        return await self._db.read(read)

    async def browse_events(
        self, tenant_id: str, where: EventFilter, before: int | None, limit: int
    ) -> Page[EventSummary]:
        def read(conn: Connection) -> Page[EventSummary]:
            bound = _seq_bound(conn, where.before_ms, before)
            rows = conn.execute(_browse_query(tenant_id, where, bound, limit + 1)).mappings().all()
            page = page_of(rows, limit, "seq", event_of)
            statuses = _statuses(conn, [e.seq for e in page.items])
            items = [EventSummary(e, statuses.get(e.seq, {})) for e in page.items]
            return Page(items, page.next_key)

        return await self._db.read(read)

    async def event_deliveries(self, tenant_id: str, event_id: str) -> list[DeliveryRecord]:
        query = (
            select(deliveries)
            .join(events, events.c.seq == deliveries.c.event_seq)
            .where(events.c.tenant_id == tenant_id, events.c.id == event_id)
            .order_by(deliveries.c.id)
        )
        rows = await self._db.read(lambda conn: conn.execute(query).mappings().all())
        return [
            DeliveryRecord(
                r["id"],
                r["subscription_id"],
                r["status"],
                r["attempts"],
                r["due_ms"],
                r["last_status_code"],
                r["updated_ms"],
            )
            for r in rows
        ]

    async def attempt_histogram(
        self, tenant_id: str, since_ms: int, bucket_ms: int
    ) -> list[tuple[int, str, int]]:
        """One range count per bucket on (tenant, created, outcome): no sort of the hour's
        attempts, which grouping by a computed bucket needs on both databases."""
        until = now_ms()
        starts = range(since_ms, until + 1, bucket_ms)
        bucket = (
            select(attempts.c.outcome, func.count())
            .where(
                attempts.c.tenant_id == tenant_id,
                attempts.c.created_ms >= bindparam("start"),
                attempts.c.created_ms < bindparam("end"),
            )
            .group_by(attempts.c.outcome)
        )

        def read(conn: Connection) -> list[tuple[int, str, int]]:
            found: list[tuple[int, str, int]] = []
            for start in starts:
                rows = conn.execute(bucket, {"start": start, "end": start + bucket_ms}).all()
                found.extend((start, outcome, int(count)) for outcome, count in rows)
            return found

        return await self._db.read(read)

    async def recover_failed(
        self, tenant_id: str, since_ms: int, subscription_id: str | None
    ) -> int:
        enabled = select(subscriptions.c.id).where(
            subscriptions.c.tenant_id == tenant_id, subscriptions.c.enabled.is_(True)
        )
        if subscription_id is not None:
            enabled = enabled.where(subscriptions.c.id == subscription_id)
        recent = select(events.c.seq).where(
            events.c.tenant_id == tenant_id, events.c.created_ms >= since_ms
        )
        failed = select(
            deliveries.c.id, deliveries.c.subscription_id, deliveries.c.ordering_key
        ).where(
            deliveries.c.tenant_id == tenant_id,
            deliveries.c.status == DeliveryStatus.FAILED.value,
            deliveries.c.subscription_id.in_(enabled.scalar_subquery()),
            deliveries.c.event_seq.in_(recent.scalar_subquery()),
        )

        def tx(conn: Connection) -> int:
            self._db.lock_event_stream(conn, tenant_id)
            now = now_ms()
            rows = conn.execute(failed.order_by(deliveries.c.id)).all()
            again = {"status": DeliveryStatus.PENDING.value, "attempts": 0, "due_ms": now}
            again.update(claim_token=None, updated_ms=now)
            plain = [row.id for row in rows if row.ordering_key is None]
            if plain:
                conn.execute(update(deliveries).where(deliveries.c.id.in_(plain)).values(again))
            for row in rows:
                if row.ordering_key is not None:
                    _queue_behind_key(conn, row.id, row.subscription_id, row.ordering_key, again)
            for sub_id in sorted({row.subscription_id for row in rows}):
                conn.execute(text(WAKE_LANE), {"sub": sub_id, "due": now})
            return len(rows)

        count = await self._db.write(tx)
        if count:
            self._db.notify_work()
        return count

    async def lane_figures(
        self, tenant_id: str | None, subscription_ids: Sequence[str] | None, top: int
    ) -> list[LaneFigures]:
        def waiting(status: DeliveryStatus) -> Any:
            """Counted lane by lane: an index range of one subscription and status each
            (there is no index on status alone; see migration 0009)."""
            return (
                select(func.count())
                .where(
                    deliveries.c.subscription_id == lanes.c.subscription_id,
                    deliveries.c.status == status.value,
                )
                .scalar_subquery()
            )

        counts = select(
            lanes.c.subscription_id,
            lanes.c.tenant_id,
            waiting(DeliveryStatus.PENDING),
            waiting(DeliveryStatus.PAUSED),
        )
        fresh = lane_stats.c.updated_ms >= now_ms() - LANE_STATS_TTL_MS
        held = select(
            lane_stats.c.subscription_id,
            lane_stats.c.tenant_id,
            func.sum(lane_stats.c.in_flight),
            func.sum(lane_stats.c.slot_limit),
        ).where(fresh)
        workers = select(lane_stats.c.worker_id, func.max(lane_stats.c.capacity)).where(fresh)
        if tenant_id is not None:
            counts = counts.where(lanes.c.tenant_id == tenant_id)
            held = held.where(lane_stats.c.tenant_id == tenant_id)
        if subscription_ids is not None:
            counts = counts.where(lanes.c.subscription_id.in_(list(subscription_ids)))
            held = held.where(lane_stats.c.subscription_id.in_(list(subscription_ids)))
        held = held.group_by(lane_stats.c.subscription_id, lane_stats.c.tenant_id)
        workers = workers.group_by(lane_stats.c.worker_id)

        def read(conn: Connection) -> list[LaneFigures]:
            found: dict[str, dict[str, Any]] = {}
            for sub_id, tenant, pending, paused in conn.execute(counts).all():
                if pending or paused:
                    found[sub_id] = {"tenant": tenant, "pending": pending, "paused": paused}
            for sub_id, tenant, in_flight, limit in conn.execute(held).all():
                entry = found.setdefault(sub_id, {"tenant": tenant})
                entry.update(in_flight=int(in_flight or 0), limit=int(limit or 0))
            capacity = sum(int(c or 0) for _, c in conn.execute(workers).all())
            figures = [
                LaneFigures(
                    subscription_id=sub_id,
                    tenant_id=entry["tenant"],
                    backlog=int(entry.get("pending", 0)),
                    paused=int(entry.get("paused", 0)),
                    in_flight=entry.get("in_flight", 0),
                    slot_limit=entry.get("limit", 0),
                    share=entry.get("in_flight", 0) / capacity if capacity else 0.0,
                )
                for sub_id, entry in found.items()
            ]
            figures.sort(key=lambda f: (-f.backlog, -f.in_flight, f.subscription_id))
            return figures[:top]

        return await self._db.read(read)


def _queue_behind_key(
    conn: Connection, delivery_id: int, sub_id: str, key: str, values: dict[str, Any]
) -> None:
    """A FIFO delivery queued again goes to the end of its key's line."""
    last = conn.execute(
        select(func.max(deliveries.c.position)).where(
            deliveries.c.subscription_id == sub_id,
            deliveries.c.ordering_key == key,
            deliveries.c.status.in_([DeliveryStatus.PENDING.value, DeliveryStatus.PAUSED.value]),
        )
    ).scalar_one_or_none()
    position = 0 if last is None else last + 1
    statement = update(deliveries).where(deliveries.c.id == delivery_id)
    conn.execute(statement.values({**values, "position": position, "blocked": last is not None}))


def _health(
    conn: Connection, tenant_id: str, subscription_id: str, sample: int
) -> SubscriptionHealth:
    query = (
        select(attempts.c.outcome, attempts.c.status_code, attempts.c.created_ms)
        .where(attempts.c.subscription_id == subscription_id, attempts.c.tenant_id == tenant_id)
        .order_by(attempts.c.id.desc())
        .limit(sample)
    )
    rows = conn.execute(query).all()
    if not rows:
        return SubscriptionHealth(0, 0, None, None, None)
    newest = rows[0]
    succeeded = sum(1 for r in rows if r.outcome == "succeeded")
    return SubscriptionHealth(
        len(rows), succeeded, newest.created_ms, newest.outcome, newest.status_code
    )


def _seq_bound(conn: Connection, before_ms: int | None, before_seq: int | None) -> int | None:
    """The page key, tightened to the newest event created at or before ``before_ms``.

    Found through the creation-time index, so jumping back in time scans no newer rows.
    """
    if before_ms is None:
        return before_seq
    newest = conn.execute(
        select(events.c.seq)
        .where(events.c.created_ms <= before_ms)
        .order_by(events.c.created_ms.desc())
        .limit(1)
    ).scalar_one_or_none()
    bound = -1 if newest is None else int(newest) + 1
    return bound if before_seq is None else min(bound, before_seq)


def _browse_query(tenant_id: str, where: EventFilter, before: int | None, limit: int) -> Any:
    query = select(events).where(events.c.tenant_id == tenant_id)
    if where.type:
        query = query.where(events.c.type == where.type)
    if before is not None:
        query = query.where(events.c.seq < before)
    if where.status and not where.type:
        query = query.where(events.c.seq.in_(_newest_with_status(tenant_id, where, before, limit)))
    elif where.status or where.subscription_id:
        conditions = [deliveries.c.event_seq == events.c.seq]
        if where.status:
            conditions.append(deliveries.c.status == where.status)
        if where.subscription_id:
            conditions.append(deliveries.c.subscription_id == where.subscription_id)
        query = query.where(exists().where(and_(*conditions)))
    return query.order_by(events.c.seq.desc()).limit(limit)


def _newest_with_status(tenant_id: str, where: EventFilter, before: int | None, limit: int) -> Any:
    """The newest events with a delivery in ``where.status``, read off the deliveries'
    (status, event) indexes: probing events one by one instead costs a scan of every
    event when few match (a rare status, or one subscription's failures)."""
    query = select(deliveries.c.event_seq).where(
        deliveries.c.tenant_id == tenant_id, deliveries.c.status == where.status
    )
    if where.subscription_id:
        query = query.where(deliveries.c.subscription_id == where.subscription_id)
    if before is not None:
        query = query.where(deliveries.c.event_seq < before)
    return query.distinct().order_by(deliveries.c.event_seq.desc()).limit(limit)


def _statuses(conn: Connection, seqs: list[int]) -> dict[int, dict[str, int]]:
    if not seqs:
        return {}
    query = (
        select(deliveries.c.event_seq, deliveries.c.status, func.count())
        .where(deliveries.c.event_seq.in_(seqs))
        .group_by(deliveries.c.event_seq, deliveries.c.status)
    )
    found: dict[int, dict[str, int]] = {}
    for seq, status, count in conn.execute(query).all():
        found.setdefault(int(seq), {})[status] = int(count)
    return found
