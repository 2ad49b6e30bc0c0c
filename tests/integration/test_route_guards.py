"""Every route, found from our own OpenAPI: scopes enforced, foreign ids invisible.

New routes are covered without editing this file; a route that forgets its scope
check or its tenant filter fails here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from tests.conftest import Api
from tidings.config import Settings
from tidings.storage.schema import api_keys

pytestmark = pytest.mark.asyncio


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """tidings' own routes only: apps (the CRM) have their own scope rules and tests."""
    return make_settings(apps="")


BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/api/v1/events"): {"type": "client.created", "payload": {}},
    ("post", "/api/v1/webhooks/subscriptions"): {
        "url": "http://127.0.0.1:9/x",
        "eventTypes": ["client.created"],
    },
    ("patch", "/api/v1/webhooks/subscriptions/{subscription_id}"): {"enabled": False},
    ("post", "/api/v1/webhooks/subscriptions/{subscription_id}/test"): {
        "eventType": "client.created"
    },
    ("post", "/api/v1/events/{event_id}/redeliver"): {},
    ("post", "/api/v1/webhooks/subscriptions/{subscription_id}/recover"): {
        "since": "2020-01-01T00:00:00Z"
    },
    ("post", "/api/v1/hooks"): {"hookUrl": "http://127.0.0.1:9/z", "event": "client.created"},
    ("post", "/api/v1/keys"): {"scopes": ["events:read"]},
    ("post", "/api/v1/transformations/test"): {
        "script": "function handler(webhook) { return webhook }",
        "eventType": "subscription.disabled",
    },
    ("post", "/api/v1/filters/test"): {"filter": {"type": "client.created"}, "envelope": {}},
}
SCOPE_OF = {"get": "read", "post": "write", "patch": "write", "delete": "write"}
ADMIN_ONLY = ("/api/v1/keys", "/api/v1/portal/")
"""Routes that manage the tenant itself: its keys, its portal links."""
NON_ADMIN = ["events:read", "events:write", "webhooks:read", "webhooks:write"]


def operations(api: Api) -> list[tuple[str, str]]:
    spec = api.client._transport.app.openapi()  # type: ignore[attr-defined]
    return [
        (method, path)
        for path, item in spec["paths"].items()
        if path.startswith("/api/v1/")
        for method in item
    ]


async def owned_ids(api: Api, headers: dict[str, str]) -> dict[str, str]:
    event = await api.client.post(
        "/api/v1/events", json={"type": "client.created", "payload": {}}, headers=headers
    )
    sub = await api.client.post(
        "/api/v1/webhooks/subscriptions",
        json={"url": "http://127.0.0.1:9/x", "eventTypes": ["client.created"]},
        headers=headers,
    )
    hook = await api.client.post(
        "/api/v1/hooks", json=BODIES[("post", "/api/v1/hooks")], headers=headers
    )
    key = await api.client.post(
        "/api/v1/keys", json=BODIES[("post", "/api/v1/keys")], headers=headers
    )
    return {
        "event_id": event.json()["id"],
        "subscription_id": sub.json()["id"],
        "hook_id": hook.json()["id"],
        "key_id": key.json()["id"],
        "name": "client.created",
        "event_type": "client.created",
    }


def fill(path: str, ids: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], path)


async def test_every_route_with_an_id_hides_other_tenants(api: Api) -> None:
    ours = await api.key("acme")
    ids = await owned_ids(api, ours)
    theirs = await api.key("globex")
    walked = 0
    for method, path in operations(api):
        if "{" not in path or "{name}" in path:  # event types are a shared catalog
            continue
        if "/samples/" in path:  # a sample, not a tenant's record
            continue
        body = BODIES.get((method, path))
        response = await api.client.request(
            method.upper(), fill(path, ids), json=body, headers=theirs
        )
        assert response.status_code == 404, (method, path, response.text)
        walked += 1
    assert walked >= 10
    still = await api.client.get(
        f"/api/v1/webhooks/subscriptions/{ids['subscription_id']}", headers=ours
    )
    assert still.json()["enabled"] is True
    key = await api.client.get(f"/api/v1/keys/{ids['key_id']}", headers=ours)
    assert key.json()["revokedUtc"] is None


async def test_every_route_demands_its_scope(api: Api) -> None:
    admin = await api.key("acme")
    ids = await owned_ids(api, admin)
    walked = 0
    for method, path in operations(api):
        reads_events = ("/events", "/event-types", "/samples/")
        family = "events" if any(part in path for part in reads_events) else "webhooks"
        if path.endswith("/redeliver"):
            family = "webhooks"
        needed = f"{family}:{SCOPE_OF[method]}"
        if path.startswith(ADMIN_ONLY):
            needed = "admin"
        wrong = await api.key("acme", *[s for s in NON_ADMIN if s != needed])
        response = await api.client.request(
            method.upper(), fill(path, ids), json=BODIES.get((method, path)), headers=wrong
        )
        assert response.status_code == 403, (method, path, needed, response.text)
        walked += 1
    assert walked >= 17


async def test_api_keys_are_stored_only_as_hashes(api: Api) -> None:
    headers = await api.key("acme")
    plaintext = headers["X-Api-Key"]
    rows = await api.tidings.store.db.read(  # type: ignore[attr-defined]
        lambda conn: conn.execute(select(api_keys)).mappings().all()
    )
    stored = " ".join(str(v) for row in rows for v in row.values())
    assert plaintext not in stored and plaintext[12:] not in stored
