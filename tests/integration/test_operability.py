"""Health endpoints and Prometheus metrics."""

from __future__ import annotations

import pytest
from aiohttp import web

from tests.conftest import Api, eventually
from tests.integration.test_delivery import emit, subscribe
from tests.support.receiver import Receiver

pytestmark = pytest.mark.asyncio


def sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


async def test_liveness_and_readiness(api: Api) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    assert (await api.client.get("/readyz")).json() == {"status": "ready"}


async def test_metrics_count_what_happened(api: Api, receiver: Receiver) -> None:
    headers = await api.key()
    url = receiver.on("/m", lambda n: web.Response(status=500 if n == 1 else 200))
    await subscribe(api, headers, url, "client.created")
    await emit(api, headers)

    async def both_attempts_counted() -> bool:
        text = (await api.client.get("/metrics")).text
        return 'tidings_delivery_attempts_total{outcome="succeeded"} 1.0' in text

    await eventually(both_attempts_counted)
    text = (await api.client.get("/metrics")).text
    assert 'tidings_events_emitted_total{type="client.created"} 1.0' in text
    assert 'tidings_delivery_attempts_total{outcome="failed"} 1.0' in text
    assert sample(text, "tidings_attempt_duration_seconds_count") == 2
    assert sample(text, "tidings_queue_depth") == 0
    assert sample(text, "tidings_oldest_due_age_seconds") == 0


async def test_metrics_show_how_far_ahead_each_tables_partitions_are_made(api: Api) -> None:
    """PostgreSQL: keys left before rows land in DEFAULT, per table (upkeep keeps two
    ranges ahead: less than one means it is failing); SQLite has no partitions."""
    text = (await api.client.get("/metrics")).text
    series = [line for line in text.splitlines() if line.startswith("tidings_partition_headroom")]
    if api.tidings.settings.resolved_database_url.startswith("sqlite"):
        assert series == []
        return
    rows = api.tidings.settings.partition_rows
    for table in ("events", "deliveries", "attempts"):
        assert sample(text, f'tidings_partition_headroom_keys{{table="{table}"}}') >= 2 * rows
