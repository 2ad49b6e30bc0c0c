"""Subscriptions over the HTTP API, on a real database."""

from __future__ import annotations

import pytest

from tests.conftest import Api
from tests.support.dns import ScriptedResolver, factory
from tidings.domain.signatures import generate_secret

pytestmark = pytest.mark.asyncio


async def create(api: Api, headers: dict[str, str], **body: object) -> dict[str, object]:
    payload = {"url": "https://example.com/hook", "eventTypes": ["client.created"], **body}
    response = await api.client.post(
        "/api/v1/webhooks/subscriptions", json=payload, headers=headers
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_create_returns_generated_secret_once(api: Api) -> None:
    headers = await api.key()
    created = await create(api, headers, eventTypes=["Client.Created", "payment.*"])
    secret = created["signingSecret"]
    assert isinstance(secret, str) and secret.startswith("whsec_")
    assert created["eventTypes"] == ["client.created", "payment.*"]
    assert created["enabled"] is True

    fetched = await api.client.get(
        f"/api/v1/webhooks/subscriptions/{created['id']}", headers=headers
    )
    assert fetched.status_code == 200
    assert "signingSecret" not in fetched.json()
    assert secret not in fetched.text
    listed = await api.client.get("/api/v1/webhooks/subscriptions", headers=headers)
    assert secret not in listed.text
    assert [s["id"] for s in listed.json()] == [created["id"]]


async def test_secret_is_encrypted_at_rest(api: Api) -> None:
    headers = await api.key()
    secret = generate_secret()
    created = await create(api, headers, signingSecret=secret)
    assert created["signingSecret"] == secret
    [stored] = await api.tidings.store.subscriptions.secrets(
        (await api.tidings.authenticate(headers["X-Api-Key"])).tenant_id,  # type: ignore[union-attr]
        str(created["id"]),
    )
    assert secret not in stored
    assert api.tidings.secretbox.decrypt(stored) == secret


async def test_patch_and_delete(api: Api) -> None:
    headers = await api.key()
    created = await create(api, headers)
    url = f"/api/v1/webhooks/subscriptions/{created['id']}"
    patched = await api.client.patch(
        url, json={"enabled": False, "description": "paused", "eventTypes": ["*"]}, headers=headers
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert (body["enabled"], body["disabledReason"], body["description"], body["eventTypes"]) == (
        False,
        "manual",
        "paused",
        ["*"],
    )
    enabled = await api.client.patch(url, json={"enabled": True}, headers=headers)
    assert enabled.json()["enabled"] is True and enabled.json()["disabledReason"] is None
    assert (await api.client.delete(url, headers=headers)).status_code == 204
    assert (await api.client.get(url, headers=headers)).status_code == 404
    assert (await api.client.delete(url, headers=headers)).status_code == 404


async def test_list_is_cursor_paginated(api: Api) -> None:
    headers = await api.key()
    ids = [(await create(api, headers))["id"] for _ in range(5)]
    seen: list[object] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        response = await api.client.get(
            "/api/v1/webhooks/subscriptions", params=params, headers=headers
        )
        seen += [s["id"] for s in response.json()]
        pages += 1
        cursor = response.headers.get("X-Paging-Cursor")
        if cursor is None:
            break
    assert seen == ids
    assert pages == 3


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://example.com/x", "eventTypes": ["client.created"]}, "url"),
        ({"url": "/relative", "eventTypes": ["client.created"]}, "url"),
        ({"url": "https://user:pw@example.com/", "eventTypes": ["client.created"]}, "url"),
        ({"url": "https://example.com/x", "eventTypes": []}, "eventTypes"),
        ({"url": "https://example.com/x", "eventTypes": ["client.*.x"]}, "eventTypes"),
        ({"url": "https://example.com/x", "eventTypes": ["**"]}, "eventTypes"),
        ({"url": "https://example.com/x", "eventTypes": ["no such type!"]}, "eventTypes"),
        ({"url": "https://example.com/x", "eventTypes": ["never.emitted"]}, "eventTypes"),
        ({"url": "https://example.com/x", "eventTypes": "client.created"}, "eventTypes"),
        ({"url": "https://example.com/x", "eventTypes": ["a.b"], "signingSecret": "nope"}, None),
        ({"url": "https://example.com/x", "eventTypes": ["a.b"], "extra": 1}, "extra"),
        ({"eventTypes": ["client.created"]}, "url"),
    ],
)
async def test_bad_subscription_is_422_and_stores_nothing(
    api: Api, body: dict[str, object], field: str | None
) -> None:
    headers = await api.key()
    response = await api.client.post("/api/v1/webhooks/subscriptions", json=body, headers=headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error" and error["message"]
    if field is not None:
        assert any(field in d["field"] for d in error["details"]), error
    listed = await api.client.get("/api/v1/webhooks/subscriptions", headers=headers)
    assert listed.json() == []


async def test_production_mode_requires_https_and_public_host(start_api) -> None:  # type: ignore[no-untyped-def]
    dns = ScriptedResolver({"example.com": [["93.184.215.14"]]})
    async with start_api(env="production", resolver_factory=factory(dns)) as api:
        headers = await api.key()
        for url in ("http://example.com/hook", "https://127.0.0.1/hook", "https://10.0.0.1/x"):
            response = await api.client.post(
                "/api/v1/webhooks/subscriptions",
                json={"url": url, "eventTypes": ["client.created"]},
                headers=headers,
            )
            assert response.status_code == 422, url
        ok = await api.client.post(
            "/api/v1/webhooks/subscriptions",
            json={"url": "https://example.com/hook", "eventTypes": ["client.created"]},
            headers=headers,
        )
        assert ok.status_code == 201
