"""The SQL fan-out of each connector picks exactly the subscriptions the domain would."""

from __future__ import annotations

from typing import Any

import pytest

from tidings.domain.events import EventPattern
from tidings.domain.subscriptions import Subscription, SubscriptionKind
from tidings.storage.schema import deliveries

pytestmark = pytest.mark.asyncio

TYPES = [
    "client.created",
    "client.updated",
    "clients.created",
    "client.created.extra",
    "payment.succeeded",
    "a.b_c-d",
    "clientx.created",
]
PATTERNS = [
    "*",
    "client.*",
    "clients.*",
    "client.created",
    "client.created.*",
    "payment.*",
    "a.*",
    "a.b_c-d",
    "clientx.created",
]


async def test_sql_fan_out_matches_the_domain(start_api: Any) -> None:
    async with start_api(dispatcher=False) as api:
        key, _ = await api.tidings.create_api_key("acme", ["admin"])
        store = api.tidings.store
        subs = {}
        for n, pattern in enumerate(PATTERNS):
            sub = Subscription(
                id=f"sub_{n}",
                tenant_id=key.tenant_id,
                url="https://example.com/",
                event_types=(pattern, "never.matches"),
                enabled=True,
                description=None,
                kind=SubscriptionKind.WEBHOOK,
                disabled_reason=None,
                consecutive_failures=0,
                created_ms=0,
                updated_ms=0,
            )
            await store.subscriptions.insert(sub, "x")
            subs[sub.id] = pattern
        for event_type in TYPES:
            event, _ = await api.tidings.emit(key.tenant_id, event_type, {})
            query = deliveries.select().where(deliveries.c.event_seq == event.seq)
            rows = await store.db.read(lambda conn, q=query: conn.execute(q).mappings().all())
            got = {row["subscription_id"] for row in rows}
            expected = {s for s, p in subs.items() if EventPattern.parse(p).matches(event_type)}
            assert got == expected, event_type
