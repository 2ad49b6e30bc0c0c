"""Signing out and revoking keys end access at once; keys are managed per tenant.

Over HTTP on both databases: a cookie replayed after sign-out opens nothing; revoking a
key ends its portal sessions and its API access (in this process at once, elsewhere
within the key cache's few seconds); the key list shows no secret; another tenant's key
ids are 404; only admin keys manage keys; the last admin key stays.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from tests.conftest import Api, running_api
from tests.support.portal import Browser, signed_in
from tidings import service
from tidings.config import Settings
from tidings.service import hash_api_key
from tidings.web.sessions import COOKIE

pytestmark = pytest.mark.asyncio


@asynccontextmanager
async def portal_as(api: Api, plaintext: str) -> AsyncIterator[Browser]:
    """A browser of its own, signed in to the portal with this key, at the home page."""
    async with signed_in(api, plaintext) as browser:
        await browser.get("/portal/")
        yield browser


async def key_id_of(api: Api, plaintext: str) -> str:
    key = await api.tidings.store.keys.find_api_key(hash_api_key(plaintext))
    assert key is not None
    return key.id


def replaying(cookie: str, **headers: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={cookie}", **headers}


async def test_a_cookie_replayed_after_sign_out_opens_nothing(api: Api) -> None:
    _, plaintext = await api.tidings.create_api_key("acme", ["admin"])
    async with portal_as(api, plaintext) as browser:
        cookie, csrf = browser.client.cookies[COOKIE], browser.csrf
        assert (await browser.client.get("/portal/keys")).status_code == 200
        response = await browser.post("/portal/logout")
        assert response.headers["location"] == "/portal/login"

    page = await api.client.get("/portal/keys", headers=replaying(cookie))
    assert page.status_code == 303
    assert page.headers["location"] == "/portal/login?next=%2Fportal%2Fkeys"
    fragment = await api.client.get(
        "/portal/chart",
        headers=replaying(
            cookie, **{"HX-Request": "true", "HX-Current-URL": "http://tidings/portal/events?x=1"}
        ),
    )
    assert fragment.status_code == 401 and fragment.text == ""
    assert fragment.headers["HX-Redirect"] == "/portal/login?next=%2Fportal%2Fevents%3Fx%3D1"
    form = await api.client.post(
        "/portal/keys", data={"csrf": csrf, "scope": "admin"}, headers=replaying(cookie)
    )
    assert form.status_code == 303 and form.headers["location"] == "/portal/login"
    tenant = await api.tidings.store.keys.find_tenant("acme")
    assert tenant is not None
    assert len(await api.tidings.store.keys.list_api_keys(tenant.id)) == 1


async def test_a_consumer_session_ends_at_sign_out_and_the_link_opens_a_new_one(
    api: Api,
) -> None:
    headers = await api.key("acme")
    link = await api.client.post("/api/v1/portal/links", json={"ttlSeconds": 600}, headers=headers)
    path = httpx.URL(link.json()["url"]).raw_path.decode()
    async with api.new_client() as client:
        assert (await client.get(path)).status_code == 303
        consumer = Browser(client)
        assert (await consumer.get("/portal/")).status_code == 200
        cookie = client.cookies[COOKIE]
        await consumer.post("/portal/logout")
    assert (await api.client.get("/portal/", headers=replaying(cookie))).status_code == 303
    async with api.new_client() as client:
        assert (await client.get(path)).status_code == 303  # links stay valid until they expire
        assert (await client.get("/portal/")).status_code == 200


async def test_revoking_a_key_ends_its_portal_sessions_and_api_access_at_once(api: Api) -> None:
    _, doomed = await api.tidings.create_api_key("acme", ["admin"])
    _, keeper = await api.tidings.create_api_key("acme", ["admin"])
    assert (await api.client.get("/api/v1/keys", headers={"X-Api-Key": doomed})).status_code == 200
    async with portal_as(api, doomed) as gone, portal_as(api, keeper) as kept:
        response = await api.client.delete(
            f"/api/v1/keys/{await key_id_of(api, doomed)}", headers={"X-Api-Key": keeper}
        )
        assert response.status_code == 204
        # At once, although this process had the key in its cache a moment ago.
        refused = await api.client.get("/api/v1/keys", headers={"X-Api-Key": doomed})
        assert refused.status_code == 401
        assert (await gone.client.get("/portal/")).status_code == 303
        chart = await gone.client.get("/portal/chart", headers={"HX-Request": "true"})
        assert chart.status_code == 401
        assert (await kept.client.get("/portal/")).status_code == 200
    again = await api.client.post("/portal/login", data={"api_key": doomed})
    assert again.status_code == 401 and "not valid" in again.text


async def test_another_process_stops_accepting_a_revoked_key_within_its_cache_window(
    api: Api, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two API processes on one database: the other one's portal sessions end at once (no
    cache); its key cache forgets the key within ``KEY_CACHE_SECONDS`` (shortened here)."""
    monkeypatch.setattr(service, "KEY_CACHE_SECONDS", 0.3)
    _, doomed = await api.tidings.create_api_key("acme", ["admin"])
    admin = await api.key("acme")
    async with running_api(settings, dispatcher=False) as other:
        assert (await other.client.get("/api/v1/keys", headers={"X-Api-Key": doomed})).is_success
        async with portal_as(other, doomed) as browser:
            revoke = f"/api/v1/keys/{await key_id_of(api, doomed)}"
            assert (await api.client.delete(revoke, headers=admin)).status_code == 204
            assert (await browser.client.get("/portal/")).status_code == 303
        await asyncio.sleep(0.35)
        late = await other.client.get("/api/v1/keys", headers={"X-Api-Key": doomed})
        assert late.status_code == 401


async def test_the_key_list_shows_no_secrets_and_only_this_tenants_keys(api: Api) -> None:
    admin = await api.key("acme")
    _, reader = await api.tidings.create_api_key("acme", ["webhooks:read", "events:read"])
    foreign = await api.key("globex")
    response = await api.client.get("/api/v1/keys", headers=admin)
    assert response.status_code == 200
    for plaintext in (admin["X-Api-Key"], reader):
        assert plaintext not in response.text and plaintext[12:] not in response.text
        assert hash_api_key(plaintext) not in response.text
    listed = response.json()
    assert {frozenset(k) for k in listed} == {
        frozenset({"id", "prefix", "scopes", "createdUtc", "revokedUtc"})
    }
    assert [k["prefix"] for k in listed] == [admin["X-Api-Key"][:12], reader[:12]]
    assert listed[1]["scopes"] == ["events:read", "webhooks:read"]
    assert listed[1]["revokedUtc"] is None
    assert await key_id_of(api, foreign["X-Api-Key"]) not in response.text


async def test_a_created_key_is_shown_once_and_holds_its_scopes(api: Api) -> None:
    admin = await api.key("acme")
    created = await api.client.post(
        "/api/v1/keys", json={"scopes": ["events:read", "events:read"]}, headers=admin
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["key"].startswith("tdg_") and body["prefix"] == body["key"][:12]
    assert body["scopes"] == ["events:read"] and body["revokedUtc"] is None
    reader = {"X-Api-Key": body["key"]}
    assert (await api.client.get("/api/v1/events", headers=reader)).status_code == 200
    emit = await api.client.post(
        "/api/v1/events", json={"type": "client.created", "payload": {}}, headers=reader
    )
    assert emit.status_code == 403
    shown = await api.client.get(f"/api/v1/keys/{body['id']}", headers=admin)
    assert "key" not in shown.json() and body["key"] not in shown.text
    bads: list[dict[str, object]] = [{}, {"scopes": []}, {"scopes": ["root"]}, {"scopes": "admin"}]
    for bad in bads:
        refused = await api.client.post("/api/v1/keys", json=bad, headers=admin)
        assert refused.status_code == 422, bad


async def test_another_tenants_key_ids_are_404_and_change_nothing(api: Api) -> None:
    ours = await api.key("acme")
    _, reader = await api.tidings.create_api_key("acme", ["events:read"])
    theirs = await api.key("globex")
    reader_id = await key_id_of(api, reader)
    for method in ("GET", "DELETE"):
        response = await api.client.request(method, f"/api/v1/keys/{reader_id}", headers=theirs)
        assert response.status_code == 404, method
        assert response.json()["error"]["code"] == "not_found"
        unknown = await api.client.request(method, "/api/v1/keys/key_nope", headers=ours)
        assert unknown.status_code == 404
    assert (await api.client.get("/api/v1/events", headers={"X-Api-Key": reader})).is_success


async def test_only_admin_keys_manage_keys(api: Api) -> None:
    await api.key("acme")
    _, reader = await api.tidings.create_api_key("acme", ["events:read"])
    everything_else = await api.key(
        "acme", "events:read", "events:write", "webhooks:read", "webhooks:write"
    )
    reader_id = await key_id_of(api, reader)
    for method, path, body in (
        ("GET", "/api/v1/keys", None),
        ("POST", "/api/v1/keys", {"scopes": ["admin"]}),
        ("GET", f"/api/v1/keys/{reader_id}", None),
        ("DELETE", f"/api/v1/keys/{reader_id}", None),
    ):
        response = await api.client.request(method, path, json=body, headers=everything_else)
        assert response.status_code == 403, (method, path)
    assert (await api.client.get("/api/v1/events", headers={"X-Api-Key": reader})).is_success


async def test_the_last_admin_key_cannot_revoke_itself(api: Api) -> None:
    first = await api.key("acme")
    first_id = await key_id_of(api, first["X-Api-Key"])
    refused = await api.client.delete(f"/api/v1/keys/{first_id}", headers=first)
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "last_admin_key"
    assert (await api.client.get("/api/v1/keys", headers=first)).status_code == 200

    second = await api.client.post("/api/v1/keys", json={"scopes": ["admin"]}, headers=first)
    successor = {"X-Api-Key": second.json()["key"]}
    assert (await api.client.delete(f"/api/v1/keys/{first_id}", headers=first)).status_code == 204
    assert (await api.client.get("/api/v1/keys", headers=first)).status_code == 401
    last = await api.client.delete(f"/api/v1/keys/{second.json()['id']}", headers=successor)
    assert last.status_code == 409
    again = await api.client.delete(f"/api/v1/keys/{first_id}", headers=successor)
    assert again.status_code == 204  # revoking a revoked key changes nothing
    listed = (await api.client.get("/api/v1/keys", headers=successor)).json()
    assert [k["revokedUtc"] is not None for k in listed] == [True, False]


async def test_an_operator_lists_creates_and_revokes_keys_in_the_portal(api: Api) -> None:
    _, plaintext = await api.tidings.create_api_key("acme", ["admin"])
    own_id = await key_id_of(api, plaintext)
    foreign_id = await key_id_of(api, (await api.key("globex"))["X-Api-Key"])
    async with portal_as(api, plaintext) as operator:
        page = await operator.get("/portal/keys")
        assert own_id in page.text and plaintext[:12] in page.text
        assert plaintext[12:] not in page.text and foreign_id not in page.text

        created = await operator.post("/portal/keys", {"scope": "events:read"})
        assert created.status_code == 201
        shown = re.search(r'id="new-key">(tdg_[^<]+)<', created.text)
        assert shown is not None
        new_key = shown.group(1)
        assert new_key not in (await operator.get("/portal/keys")).text
        new_id = await key_id_of(api, new_key)
        assert (await operator.post("/portal/keys", {})).status_code == 422

        forged = await operator.client.post(
            f"/portal/keys/{new_id}/revoke", data={"csrf": "0" * 40}
        )
        assert forged.status_code == 403
        assert (await api.client.get("/api/v1/events", headers={"X-Api-Key": new_key})).is_success
        revoked = await operator.post(f"/portal/keys/{new_id}/revoke")
        assert revoked.headers["location"] == "/portal/keys"
        refused = await api.client.get("/api/v1/events", headers={"X-Api-Key": new_key})
        assert refused.status_code == 401
        assert "revoked" in (await operator.get("/portal/keys")).text

        assert (await operator.post(f"/portal/keys/{foreign_id}/revoke")).status_code == 404
        last = await operator.post(f"/portal/keys/{own_id}/revoke")
        assert last.status_code == 409 and "last admin key" in last.text

        await operator.post("/portal/keys", {"scope": "admin"})
        signed_out = await operator.post(f"/portal/keys/{own_id}/revoke")
        assert signed_out.headers["location"] == "/portal/login"
        assert (await operator.client.get("/portal/keys")).status_code == 303


async def test_consumers_cannot_see_keys(api: Api) -> None:
    headers = await api.key("acme")
    link = await api.client.post(
        "/api/v1/portal/links", json={"ttlSeconds": 600, "canManage": True}, headers=headers
    )
    async with api.new_client() as client:
        await client.get(httpx.URL(link.json()["url"]).raw_path.decode())
        consumer = Browser(client)
        home = await consumer.get("/portal/")
        assert "API keys" not in home.text
        assert (await client.get("/portal/keys")).status_code == 403
        response = await consumer.post(
            f"/portal/keys/{await key_id_of(api, headers['X-Api-Key'])}/revoke"
        )
        assert response.status_code == 403
    assert (await api.client.get("/api/v1/keys", headers=headers)).is_success
