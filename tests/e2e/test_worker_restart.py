"""A ``tidings worker`` killed mid-delivery loses nothing: its lease expires and it is retried."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import eventually
from tests.support.processes import Process, tidings_env
from tests.support.receiver import Receiver
from tidings.config import Settings
from tidings.service import Tidings

pytestmark = pytest.mark.asyncio


async def test_sigkilled_worker_delivery_is_retried(
    tmp_path: Path, receiver: Receiver, database_url: str
) -> None:
    data = tmp_path / "data"
    env = tidings_env(data, TIDINGS_CLAIM_LEASE="1", TIDINGS_DATABASE_URL=database_url)
    settings = Settings(data_dir=data, env="development", database_url=database_url)
    tidings = Tidings.from_settings(settings)
    await tidings.store.migrate()

    release = asyncio.Event()

    async def respond(count: int) -> web.Response:
        if count == 1:  # answered only after the worker that sent it is dead
            await release.wait()
        return web.Response(status=200)

    url = receiver.on("/slow", respond)

    key, _ = await tidings.create_api_key("acme", ["admin"])
    sub, _ = await tidings.create_subscription(key.tenant_id, url, ["client.created"])
    event, _ = await tidings.emit(key.tenant_id, "client.created", {"n": 1})

    first = Process(["worker"], env, tmp_path / "worker1.log")
    second: Process | None = None
    try:
        await receiver.wait_count("/slow", 1, timeout=30)
        first.kill()
        release.set()
        second = Process(["worker"], env, tmp_path / "worker2.log")
        received = await receiver.wait_count("/slow", 2, timeout=30)
        assert {r.headers["X-Webhook-Id"] for r in received} == {event.id}

        async def logged() -> bool:
            attempts = await tidings.store.events.event_attempts(key.tenant_id, event.id)
            return any(a.outcome == "succeeded" for a in attempts)

        await eventually(logged, timeout=30)
        attempts = await tidings.store.events.event_attempts(key.tenant_id, event.id)
        assert [a.subscription_id for a in attempts] == [sub.id]
        assert attempts[0].attempt == 1, "the killed worker recorded nothing; the retry is try 1"
    finally:
        first.stop()
        if second is not None:
            assert second.stop() == 0, second.log.read_text()
        await tidings.close()
