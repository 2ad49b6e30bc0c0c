"""Subscriptions: who receives what, their secrets, and their delivery log."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, RowMapping, and_, delete, insert, select, text, update

from tidings.domain.clock import now_ms
from tidings.domain.deliveries import DeliveryStatus, DisableReason
from tidings.domain.subscriptions import Subscription
from tidings.storage.records import AttemptRecord, Page, SecretRotation
from tidings.storage.rows import (
    attempt_of,
    dialect_columns,
    page_of,
    previous_secret,
    subscription_of,
)
from tidings.storage.rules import subscription_changes
from tidings.storage.schema import attempts, deliveries, lanes, subscriptions
from tidings.storage.sql.database import Database, SQLPart
from tidings.storage.sql.filtering import BUMP_VERSION


class SQLSubscriptions(SQLPart):
    async def insert(
        self, subscription: Subscription, secret_enc: str, headers_enc: str | None = None
    ) -> None:
        dialect = dialect_columns(
            {
                "retry": subscription.retry,
                "header_names": subscription.header_names,
                "filter": subscription.filter,
            }
        )
        statement = insert(subscriptions).values(
            **dialect,
            signature_scheme=subscription.signature_scheme.value,
            headers_enc=headers_enc,
            propagate_trace=subscription.propagate_trace,
            transformation=subscription.transformation,
            id=subscription.id,
            tenant_id=subscription.tenant_id,
            kind=subscription.kind.value,
            url=subscription.url,
            event_types=json.dumps(list(subscription.event_types)),
            description=subscription.description,
            enabled=subscription.enabled,
            disabled_reason=subscription.disabled_reason,
            secret_enc=secret_enc,
            consecutive_failures=0,
            max_concurrency=subscription.max_concurrency,
            rate_limit=subscription.rate_limit,
            public_key=subscription.public_key,
            ordering=subscription.ordering,
            disabled_ms=None if subscription.enabled else subscription.created_ms,
            created_ms=subscription.created_ms,
            updated_ms=subscription.updated_ms,
        )
        lane = insert(lanes).values(
            subscription_id=subscription.id, tenant_id=subscription.tenant_id
        )

        def tx(conn: Connection) -> None:
            if subscription.filter is not None:
                filters_changed(self._db, conn, subscription.tenant_id)
            conn.execute(statement)
            conn.execute(lane)

        await self._db.write(tx)

    async def get(self, tenant_id: str, subscription_id: str) -> Subscription | None:
        query = select(subscriptions).where(owned(tenant_id, subscription_id))
        row = await self._db.read(lambda conn: conn.execute(query).mappings().first())
        return subscription_of(row) if row is not None else None

    async def page(self, tenant_id: str, after: int | None, limit: int) -> Page[Subscription]:
        query = select(subscriptions).where(subscriptions.c.tenant_id == tenant_id)
        if after is not None:
            query = query.where(subscriptions.c.seq > after)
        query = query.order_by(subscriptions.c.seq).limit(limit + 1)
        rows = await self._db.read(lambda conn: conn.execute(query).mappings().all())
        return page_of(rows, limit, "seq", subscription_of)

    async def matching(self, tenant_id: str, event_type: str) -> list[Subscription]:
        query = select(subscriptions).where(
            subscriptions.c.tenant_id == tenant_id, subscriptions.c.enabled.is_(True)
        )
        rows = await self._db.read(lambda conn: conn.execute(query).mappings().all())
        found = [subscription_of(r) for r in rows]
        return [s for s in found if s.wants(event_type)]

    async def update(
        self, tenant_id: str, subscription_id: str, changes: Mapping[str, Any]
    ) -> Subscription | None:
        """Apply ``changes``; disabling pauses its deliveries, enabling resumes them (and
        wakes the workers: what was paused is due now)."""
        values = dialect_columns(subscription_changes(changes))
        if "event_types" in values:
            values["event_types"] = json.dumps(list(values["event_types"]))
        now = now_ms()
        values["updated_ms"] = now
        enabling = values.get("enabled") is True
        if enabling:
            values["disabled_ms"] = None
        refilters = "filter" in values or "event_types" in values

        def tx(conn: Connection) -> RowMapping | None:
            if refilters:
                filters_changed(self._db, conn, tenant_id)
            before = conn.execute(
                select(subscriptions.c.enabled, subscriptions.c.disabled_ms).where(
                    owned(tenant_id, subscription_id)
                )
            ).first()
            if before is None:
                return None
            if values.get("enabled") is False and before.enabled:
                values["disabled_ms"] = now
            statement = (
                update(subscriptions)
                .where(owned(tenant_id, subscription_id))
                .values(**values)
                .returning(*subscriptions.c)
            )
            row = conn.execute(statement).mappings().first()
            if enabling and not before.enabled:
                resume(conn, subscription_id, now, before.disabled_ms)
                self._db.announce_work(conn)
                resumed.append(subscription_id)
            elif values.get("enabled") is False and before.enabled:
                stop(conn, subscription_id, DisableReason(values["disabled_reason"]), now)
            return row

        resumed: list[str] = []
        row = await self._db.write(tx)
        if resumed:
            self._db.notify_work()
        return subscription_of(row) if row is not None else None

    async def delete(self, tenant_id: str, subscription_id: str) -> bool:
        def tx(conn: Connection) -> bool:
            query = select(subscriptions.c.filter).where(owned(tenant_id, subscription_id))
            found = conn.execute(query).first()
            if found is None:
                return False
            if found.filter is not None:
                filters_changed(self._db, conn, tenant_id)
            conn.execute(delete(subscriptions).where(owned(tenant_id, subscription_id)))
            drop_unfinished(conn, subscription_id, now_ms())
            return True

        return await self._db.write(tx)

    async def secrets(self, tenant_id: str, subscription_id: str) -> list[str]:
        query = select(
            subscriptions.c.secret_enc,
            subscriptions.c.previous_secret_enc,
            subscriptions.c.previous_secret_expires_ms,
        ).where(owned(tenant_id, subscription_id))
        row = await self._db.read(lambda conn: conn.execute(query).mappings().first())
        if row is None:
            return []
        return [row["secret_enc"], *previous_secret(row, now_ms())]

    async def headers(self, tenant_id: str, subscription_id: str) -> str | None:
        query = select(subscriptions.c.headers_enc).where(owned(tenant_id, subscription_id))
        return await self._db.read(lambda conn: conn.execute(query).scalar_one_or_none())

    async def rotate_secret(
        self, tenant_id: str, subscription_id: str, rotation: SecretRotation
    ) -> Subscription | None:
        values: dict[str, Any] = {
            "previous_secret_expires_ms": rotation.grace_until_ms,
            "secret_enc": rotation.secret_enc,
            "public_key": rotation.public_key,
            "updated_ms": now_ms(),
        }
        if not rotation.keep_previous:
            values["previous_secret_enc"] = subscriptions.c.secret_enc
            values["previous_public_key"] = subscriptions.c.public_key
        statement = (
            update(subscriptions)
            .where(owned(tenant_id, subscription_id))
            .values(**values)
            .returning(*subscriptions.c)
        )
        row = await self._db.write(lambda conn: conn.execute(statement).mappings().first())
        return subscription_of(row) if row is not None else None

    async def attempts(
        self,
        tenant_id: str,
        subscription_id: str,
        outcome: str | None,
        before: int | None,
        limit: int,
    ) -> Page[AttemptRecord]:
        query = select(attempts).where(
            attempts.c.tenant_id == tenant_id, attempts.c.subscription_id == subscription_id
        )
        if outcome is not None:
            query = query.where(attempts.c.outcome == outcome)
        if before is not None:
            query = query.where(attempts.c.id < before)
        query = query.order_by(attempts.c.id.desc()).limit(limit + 1)
        rows = await self._db.read(lambda conn: conn.execute(query).mappings().all())
        return page_of(rows, limit, "id", attempt_of)

    async def disable(
        self, tenant_id: str, subscription_id: str, reason: DisableReason
    ) -> Subscription | None:
        now = now_ms()
        statement = (
            update(subscriptions)
            .where(owned(tenant_id, subscription_id), subscriptions.c.enabled.is_(True))
            .values(enabled=False, disabled_reason=reason.value, disabled_ms=now, updated_ms=now)
            .returning(*subscriptions.c)
        )

        def tx(conn: Connection) -> RowMapping | None:
            row = conn.execute(statement).mappings().first()
            if row is not None:
                stop(conn, subscription_id, reason, now)
            return row

        row = await self._db.write(tx)
        return subscription_of(row) if row is not None else None


def filters_changed(db: Database, conn: Connection, tenant_id: str) -> None:
    """Which of the tenant's subscriptions are filtered, or how, changes in this
    transaction: take the tenant's stream lock first (so no emit evaluates filters while
    they change, see ``sql/filtering.py``) and move its filters' version on."""
    db.lock_event_stream(conn, tenant_id)
    conn.execute(text(BUMP_VERSION), {"tenant": tenant_id})


def owned(tenant_id: str, subscription_id: str) -> Any:
    return and_(subscriptions.c.tenant_id == tenant_id, subscriptions.c.id == subscription_id)


def stop(conn: Connection, subscription_id: str, reason: DisableReason, now: int) -> None:
    """A disable pauses what is pending (breaker, by hand) or drops it (410 Gone)."""
    if reason.pauses:
        conn.execute(
            update(deliveries)
            .where(
                deliveries.c.subscription_id == subscription_id,
                deliveries.c.status == DeliveryStatus.PENDING.value,
            )
            .values(status=DeliveryStatus.PAUSED.value, claim_token=None, updated_ms=now)
        )
    else:
        drop_unfinished(conn, subscription_id, now)
    conn.execute(
        update(lanes).where(lanes.c.subscription_id == subscription_id).values(next_due_ms=None)
    )


def resume(conn: Connection, subscription_id: str, now: int, paused_since: int | None) -> None:
    """Paused deliveries are pending again, due now (a retry that was scheduled, or an
    attempt in flight when the subscription was disabled, goes now too); the time they
    spent paused is added to their retry window. The lane's limits and the scheduler pace
    them: re-enabling does not flood the receiver."""
    paused = deliveries.c.status == DeliveryStatus.PAUSED.value
    conn.execute(
        update(deliveries)
        .where(deliveries.c.subscription_id == subscription_id, paused)
        .values(
            status=DeliveryStatus.PENDING.value,
            due_ms=now,
            paused_ms=deliveries.c.paused_ms + max(0, now - (paused_since or now)),
            updated_ms=now,
        )
    )
    conn.execute(
        update(lanes).where(lanes.c.subscription_id == subscription_id).values(next_due_ms=now)
    )


def drop_unfinished(conn: Connection, subscription_id: str, now: int) -> None:
    """Nothing more will be sent: a 410 Gone, or the subscription was deleted."""
    conn.execute(
        update(deliveries)
        .where(
            deliveries.c.subscription_id == subscription_id,
            deliveries.c.status.in_([DeliveryStatus.PENDING.value, DeliveryStatus.PAUSED.value]),
        )
        .values(status=DeliveryStatus.CANCELLED.value, claim_token=None, updated_ms=now)
    )
