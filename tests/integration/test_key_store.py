"""Keys and portal sessions in storage, held by all three stores: memory, SQLite,
PostgreSQL. Revoking ends a key's sessions; expired and revoked sessions open nothing;
the last admin key is kept when asked, even against a concurrent revocation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.stores import STORES, service_for, settings_for
from tidings.config import Settings
from tidings.dispatcher.retention import prune_once
from tidings.domain.ids import new_id
from tidings.service import Tidings, hash_api_key
from tidings.storage import PortalSession, Revocation

pytestmark = pytest.mark.asyncio

NOW = 1_900_000_000_000
HOUR = 3_600_000


@pytest.fixture(params=STORES)
async def settings_or_memory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[Settings, bool]:
    settings = settings_for(request.param, request, tmp_path)
    return settings, settings.database_url is None


@pytest.fixture
async def tidings(settings_or_memory: tuple[Settings, bool]) -> AsyncIterator[Tidings]:
    async with service_for(settings_or_memory[0]) as service:
        yield service


def session(tenant_id: str, key_id: str | None, expires_ms: int = NOW + HOUR) -> PortalSession:
    return PortalSession(new_id("ses"), tenant_id, key_id, True, NOW, expires_ms)


async def test_revoking_a_key_ends_its_sessions_and_no_others(tidings: Tidings) -> None:
    store = tidings.store
    admin, _ = await tidings.create_api_key("acme", ["admin"])
    other, _ = await tidings.create_api_key("acme", ["admin"])
    mine, spare = session(admin.tenant_id, admin.id), session(admin.tenant_id, admin.id)
    theirs, consumer = session(other.tenant_id, other.id), session(admin.tenant_id, None)
    for s in (mine, spare, theirs, consumer):
        await store.sessions.open_session(s)
    assert await store.sessions.find_session(mine.id, NOW) == mine

    revoked = await store.keys.revoke_api_key(admin.id, admin.tenant_id, NOW, True)

    assert revoked.outcome is Revocation.REVOKED and revoked.sessions_ended == 2
    assert revoked.key is not None and revoked.key.revoked_ms == NOW
    assert await store.sessions.find_session(mine.id, NOW) is None
    assert await store.sessions.find_session(spare.id, NOW) is None
    assert await store.sessions.find_session(theirs.id, NOW) == theirs
    assert await store.sessions.find_session(consumer.id, NOW) == consumer


async def test_a_session_opened_after_its_key_was_revoked_opens_nothing(
    tidings: Tidings,
) -> None:
    """A sign-in that authenticated just before the revocation stores its row after it."""
    admin, _ = await tidings.create_api_key("acme", ["admin"])
    await tidings.create_api_key("acme", ["admin"])
    await tidings.store.keys.revoke_api_key(admin.id, None, NOW, True)
    late = session(admin.tenant_id, admin.id)
    await tidings.store.sessions.open_session(late)
    assert await tidings.store.sessions.find_session(late.id, NOW) is None


async def test_expired_and_ended_sessions_open_nothing(tidings: Tidings) -> None:
    tenant = await tidings.store.keys.ensure_tenant("acme")
    short = session(tenant.id, None, expires_ms=NOW + 1000)
    await tidings.store.sessions.open_session(short)
    assert await tidings.store.sessions.find_session(short.id, NOW + 999) == short
    assert await tidings.store.sessions.find_session(short.id, NOW + 1000) is None
    assert await tidings.store.sessions.end_session(short.id) is True
    assert await tidings.store.sessions.end_session(short.id) is False
    assert await tidings.store.sessions.find_session(short.id, NOW) is None


async def test_revocation_is_scoped_idempotent_and_listed(tidings: Tidings) -> None:
    keys = tidings.store.keys
    first, _ = await tidings.create_api_key("acme", ["admin"])
    reader, plaintext = await tidings.create_api_key("acme", ["events:read", "webhooks:read"])
    foreign, _ = await tidings.create_api_key("globex", ["admin"])

    assert (await keys.revoke_api_key(reader.id, foreign.tenant_id, NOW, True)).outcome is (
        Revocation.NOT_FOUND
    )
    assert (await keys.revoke_api_key("key_nope", None, NOW, True)).outcome is (
        Revocation.NOT_FOUND
    )
    assert await keys.get_api_key(foreign.tenant_id, reader.id) is None
    assert (await keys.revoke_api_key(reader.id, reader.tenant_id, NOW, True)).outcome is (
        Revocation.REVOKED
    )
    again = await keys.revoke_api_key(reader.id, None, NOW + 5, True)
    assert again.outcome is Revocation.ALREADY_REVOKED
    assert again.key is not None and again.key.revoked_ms == NOW

    listed = await keys.list_api_keys(first.tenant_id)
    assert [k.id for k in listed] == [first.id, reader.id]
    assert listed[1].scopes == {"events:read", "webhooks:read"}
    assert listed[1].prefix == plaintext[:12]
    assert (listed[0].revoked_ms, listed[1].revoked_ms) == (None, NOW)
    assert await keys.find_api_key(hash_api_key(plaintext)) is None


async def test_the_last_admin_key_is_kept_when_asked(tidings: Tidings) -> None:
    keys = tidings.store.keys
    admin, _ = await tidings.create_api_key("acme", ["admin"])
    await tidings.create_api_key("acme", ["events:write"])
    refused = await keys.revoke_api_key(admin.id, admin.tenant_id, NOW, True)
    assert refused.outcome is Revocation.LAST_ADMIN
    kept = await keys.get_api_key(admin.tenant_id, admin.id)
    assert kept is not None and kept.revoked_ms is None
    forced = await keys.revoke_api_key(admin.id, None, NOW, False)
    assert forced.outcome is Revocation.REVOKED


async def test_two_admin_keys_revoking_each_other_leave_one(
    tidings: Tidings, settings_or_memory: tuple[Settings, bool]
) -> None:
    """Two API processes, each revoking the other admin key at the same moment: the check
    and the revocation are serialised per tenant, so exactly one succeeds."""
    settings, memory = settings_or_memory
    second = tidings if memory else Tidings.from_settings(settings)
    try:
        for round_ in range(5):
            a, _ = await tidings.create_api_key(f"t{round_}", ["admin"])
            b, _ = await tidings.create_api_key(f"t{round_}", ["admin"])
            outcomes = await asyncio.gather(
                tidings.store.keys.revoke_api_key(a.id, a.tenant_id, NOW, True),
                second.store.keys.revoke_api_key(b.id, b.tenant_id, NOW, True),
            )
            assert sorted(o.outcome for o in outcomes) == sorted(
                [Revocation.REVOKED, Revocation.LAST_ADMIN]
            ), round_
    finally:
        if second is not tidings:
            await second.close()


async def test_expired_sessions_are_pruned_in_batches(tidings: Tidings) -> None:
    tenant = await tidings.store.keys.ensure_tenant("acme")
    old = [session(tenant.id, None, expires_ms=NOW - i - 1) for i in range(5)]
    live = session(tenant.id, None, expires_ms=NOW + 1)
    for s in [*old, live]:
        await tidings.store.sessions.open_session(s)
    assert await tidings.store.retention.prune_sessions(NOW, 3) == 3
    assert await tidings.store.retention.prune_sessions(NOW, 3) == 2
    assert await tidings.store.retention.prune_sessions(NOW, 3) == 0
    assert await tidings.store.sessions.find_session(live.id, NOW) == live
    # Retention's pass (run beside every dispatcher) includes them.
    pruned = await prune_once(tidings.store.retention, 30, 7, batch=10, now_ms=NOW + 2)
    assert pruned.sessions == 1
    assert await tidings.store.sessions.end_session(live.id) is False
