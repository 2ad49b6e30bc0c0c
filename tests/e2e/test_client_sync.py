"""The blocking ``tidings.client.Client`` against a real server process.

The scenario runs in a worker thread: the blocking client must not stall the event loop
that the in-process ``Receiver`` answers deliveries on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from tests.support.receiver import Receiver
from tidings.client import Client, NotFound, TidingsError, Unauthorized

pytestmark = pytest.mark.asyncio


def until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll a condition held by the server (there is nothing to wait on across processes)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def events_and_errors(base: str, key: str) -> None:
    with Client(base, key, timeout=5) as client:
        first = client.events.emit("client.created", {"n": -1}, idempotency_key="once")
        assert client.events.emit("client.created", {"n": -1}, idempotency_key="once") == first
        emitted = [client.events.emit("client.created", {"n": n}).id for n in range(6)]
        walked = [e.id for e in client.events.iter(type="client.created", limit=2)]
        assert walked == [first.id, *emitted]
        assert client.events.list(limit=3).next_cursor is not None

        with pytest.raises(NotFound) as missing:
            client.events.get("evt_missing")
        assert (missing.value.status, missing.value.code) == (404, "not_found")
        with pytest.raises(TidingsError) as invalid:
            client.subscriptions.create("ftp://nowhere", ["client.created"])
        assert (invalid.value.status, invalid.value.code) == (422, "validation_error")
    with Client(base + "/api/v1", "tdg_wrong") as stranger, pytest.raises(Unauthorized) as denied:
        stranger.events.list()
    assert denied.value.code == "unauthorized"


def subscription_life(base: str, key: str, hook_url: str) -> None:
    with Client(base, key) as client:
        sub = client.subscriptions.create(hook_url, ["client.*"], description="sync")
        assert sub.signing_secret is not None and sub.signing_secret.startswith("whsec_")
        event = client.events.emit("client.updated", {"clientId": "cli_1"})
        until(lambda: len(client.events.deliveries(event.id)) == 1)
        [attempt] = client.subscriptions.iter_deliveries(sub.id)
        assert (attempt.event_id, attempt.status, attempt.status_code) == (
            event.id,
            "succeeded",
            200,
        )

        paused = client.subscriptions.update(sub.id, enabled=False)
        assert (paused.enabled, paused.description) == (False, "sync")
        rotated = client.subscriptions.rotate_secret(sub.id)
        assert rotated.signing_secret != sub.signing_secret
        assert [s.id for s in client.subscriptions.iter()] == [sub.id]
        client.subscriptions.delete(sub.id)
        assert list(client.subscriptions.iter()) == []


async def test_sync_client_events_and_errors(server: tuple[str, str]) -> None:
    await asyncio.to_thread(events_and_errors, *server)


async def test_sync_client_subscription_and_delivery(
    server: tuple[str, str], receiver: Receiver
) -> None:
    await asyncio.to_thread(subscription_life, *server, receiver.url("/hook"))
    assert len(receiver.at("/hook")) == 1
