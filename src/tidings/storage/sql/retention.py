"""Pruning old rows, a small batch per transaction.

This is all of retention on SQLite: one file, one writer, no partitions to drop (and an
embedded database is rarely big enough for deletes to hurt). On PostgreSQL
``storage/partitions.py`` drops whole partitions first and these deletes take what is
left (rows of partitions a kept event holds back, and the DEFAULT partition's).
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, Connection, delete, select, true, update

from tidings.domain.deliveries import DeliveryStatus
from tidings.storage.interfaces import Unpartitioned
from tidings.storage.schema import attempts, deliveries, events, portal_sessions
from tidings.storage.sql.database import SQLPart


class SQLRetention(SQLPart, Unpartitioned):
    async def prune_response_bodies(self, before_ms: int, batch: int) -> int:
        old = (
            select(attempts.c.id)
            .where(attempts.c.created_ms < before_ms, attempts.c.response_body != "")
            .limit(batch)
        )
        statement = (
            update(attempts)
            .where(attempts.c.id.in_(old.scalar_subquery()))
            .values(response_body="")
        )
        return await self._db.write(lambda conn: int(conn.execute(statement).rowcount))

    async def prune_events(self, before_ms: int, batch: int) -> int:
        return await self.delete_events(before_ms, batch)

    async def delete_events(
        self, before_ms: int, batch: int, within: ColumnElement[bool] | None = None
    ) -> int:
        """Delete up to ``batch`` events older than the cutoff with nothing pending (and
        ``within`` a condition on them, if given), with their deliveries and attempts.
        Paused deliveries do not keep their events (see the README: that bounds what a
        long-disabled subscription accumulates)."""
        pending = (
            select(deliveries.c.id)
            .where(
                deliveries.c.event_seq == events.c.seq,
                deliveries.c.status == DeliveryStatus.PENDING.value,
            )
            .exists()
        )
        old = (
            select(events.c.seq, events.c.id)
            .where(events.c.created_ms < before_ms, ~pending)
            .where(true() if within is None else within)
            .order_by(events.c.created_ms)
            .limit(batch)
        )

        def tx(conn: Connection) -> int:
            rows = conn.execute(old).all()
            if not rows:
                return 0
            seqs = [row.seq for row in rows]
            event_ids = [row.id for row in rows]
            conn.execute(delete(attempts).where(attempts.c.event_id.in_(event_ids)))
            conn.execute(delete(deliveries).where(deliveries.c.event_seq.in_(seqs)))
            conn.execute(delete(events).where(events.c.seq.in_(seqs)))
            return len(rows)

        return await self._db.write(tx)

    async def prune_sessions(self, before_ms: int, batch: int) -> int:
        old = (
            select(portal_sessions.c.id)
            .where(portal_sessions.c.expires_ms < before_ms)
            .order_by(portal_sessions.c.expires_ms)
            .limit(batch)
        )
        statement = delete(portal_sessions).where(portal_sessions.c.id.in_(old.scalar_subquery()))
        return await self._db.write(lambda conn: int(conn.execute(statement).rowcount))
