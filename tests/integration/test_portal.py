"""The portal's pages and forms over HTTP, on both databases (the browser test is in e2e)."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from aiohttp import web

from tests.conftest import Api, eventually
from tests.integration.test_delivery import emit, subscribe
from tests.support.portal import Browser, acme_subscriptions, acme_tenant_id
from tests.support.receiver import Receiver
from tidings.domain.deliveries import DisableReason

pytestmark = pytest.mark.asyncio


async def sign_in(api: Api, key: str) -> httpx.Response:
    return await api.client.post("/portal/login", data={"api_key": key, "next": "/portal/"})


async def admin_headers(api: Api) -> dict[str, str]:
    return await api.key("acme", "admin")


async def test_pages_ask_to_sign_in_first(api: Api) -> None:
    response = await api.client.get("/portal/events", params={"status": "failed"})
    assert response.status_code == 303
    assert response.headers["location"] == "/portal/login?next=%2Fportal%2Fevents%3Fstatus%3Dfailed"
    response = await api.client.post("/portal/subscriptions", data={"url": "http://x.test/"})
    assert response.status_code == 303
    assert response.headers["location"] == "/portal/login"
    assert (await api.client.get("/portal/login")).status_code == 200


async def test_sign_in_needs_a_valid_admin_key(api: Api) -> None:
    response = await sign_in(api, "tdg_not-a-key")
    assert response.status_code == 401
    assert "not valid" in response.text
    _, reader = await api.tidings.create_api_key("acme", ["events:read"])
    response = await sign_in(api, reader)
    assert response.status_code == 401
    assert "admin scope" in response.text
    assert "tidings_portal" not in response.cookies


async def test_sign_in_only_redirects_inside_the_portal(api: Api) -> None:
    _, plaintext = await api.tidings.create_api_key("acme", ["admin"])
    for target in ("https://evil.test/", "//evil.test/portal/", "/api/v1/events"):
        response = await api.client.post(
            "/portal/login", data={"api_key": plaintext, "next": target}
        )
        assert response.headers["location"] == "/portal/"


async def test_operator_creates_tests_disables_and_deletes_a_subscription(
    api: Api, operator: Browser, receiver: Receiver
) -> None:
    await operator.get("/portal/subscriptions/new")
    response = await operator.post(
        "/portal/subscriptions",
        {
            "url": receiver.url("/portal"),
            "event_types": "client.* lead.created",
            "description": "CRM",
        },
    )
    assert response.status_code == 201
    secret = re.search(r'id="new-secret">(whsec_[^<]+)<', response.text)
    assert secret is not None
    tenant_id = await acme_tenant_id(api)
    (sub,) = await acme_subscriptions(api)
    assert sub.event_types == ("client.*", "lead.created")
    assert sub.description == "CRM"

    home = await operator.get("/portal/")
    assert receiver.url("/portal") in home.text
    assert ">active<" in home.text

    result = await operator.post(
        f"/portal/subscriptions/{sub.id}/test",
        {"event_type": "client.created"},
        headers={"HX-Request": "true"},
    )
    assert "Delivered" in result.text
    assert "<html" not in result.text  # htmx gets the fragment only
    (request,) = receiver.at("/portal")
    assert b'"type":"client.created"' in request.body

    response = await operator.post(f"/portal/subscriptions/{sub.id}/disable")
    assert response.status_code == 303
    disabled = await api.tidings.store.subscriptions.get(tenant_id, sub.id)
    assert disabled is not None and not disabled.enabled
    page = await operator.get(f"/portal/subscriptions/{sub.id}")
    assert 'id="status">disabled<' in page.text

    await operator.post(f"/portal/subscriptions/{sub.id}/enable")
    enabled = await api.tidings.store.subscriptions.get(tenant_id, sub.id)
    assert enabled is not None and enabled.enabled

    response = await operator.post(f"/portal/subscriptions/{sub.id}/delete")
    assert response.headers["location"] == "/portal/"
    assert await api.tidings.store.subscriptions.get(tenant_id, sub.id) is None
    assert (await operator.get(f"/portal/subscriptions/{sub.id}")).status_code == 404


async def test_bad_form_input_is_shown_and_nothing_is_stored(
    api: Api, operator: Browser, receiver: Receiver
) -> None:
    response = await operator.post(
        "/portal/subscriptions", {"url": "ftp://files.test/", "event_types": "*"}
    )
    assert response.status_code == 422
    assert "url:" in response.text
    response = await operator.post(
        "/portal/subscriptions", {"url": receiver.url(), "event_types": "nonsense"}
    )
    assert response.status_code == 422
    assert "eventTypes:" in response.text
    assert await acme_subscriptions(api) == []


async def test_editing_checks_the_url_like_create_does(
    api: Api, operator: Browser, receiver: Receiver
) -> None:
    headers = await admin_headers(api)
    sub = await subscribe(api, headers, receiver.url("/a"), "client.created")
    response = await operator.post(
        f"/portal/subscriptions/{sub['id']}/edit",
        {"url": "javascript:alert(1)", "event_types": "client.created"},
    )
    assert response.status_code == 422
    response = await operator.post(
        f"/portal/subscriptions/{sub['id']}/edit",
        {"url": receiver.url("/b"), "event_types": "lead.*", "description": "moved"},
    )
    assert response.status_code == 303
    tenant_id = await acme_tenant_id(api)
    edited = await api.tidings.store.subscriptions.get(tenant_id, sub["id"])
    assert edited is not None
    assert (edited.url, edited.event_types, edited.description) == (
        receiver.url("/b"),
        ("lead.*",),
        "moved",
    )


async def test_a_form_without_the_sessions_csrf_token_changes_nothing(
    api: Api, operator: Browser, receiver: Receiver
) -> None:
    headers = await admin_headers(api)
    sub = await subscribe(api, headers, receiver.url(), "client.created")
    response = await operator.client.post(
        f"/portal/subscriptions/{sub['id']}/disable", data={"csrf": "0" * 40}
    )
    assert response.status_code == 403
    response = await operator.client.post(f"/portal/subscriptions/{sub['id']}/delete")
    assert response.status_code == 403
    tenant_id = await acme_tenant_id(api)
    kept = await api.tidings.store.subscriptions.get(tenant_id, sub["id"])
    assert kept is not None and kept.enabled


async def test_home_shows_status_success_rate_and_last_delivery(
    api: Api, operator: Browser, receiver: Receiver
) -> None:
    headers = await admin_headers(api)
    good = await subscribe(api, headers, receiver.on("/good", lambda n: web.Response()), "*")
    bad_url = receiver.on("/bad", lambda n: web.Response(status=503, text="down"))
    bad = await subscribe(api, headers, bad_url, "*")
    gone = await subscribe(api, headers, receiver.url("/gone"), "lead.created")
    breaker = await subscribe(api, headers, receiver.url("/breaker"), "lead.created")
    tenant_id = await acme_tenant_id(api)
    await api.tidings.store.subscriptions.disable(tenant_id, gone["id"], DisableReason.GONE)
    await api.tidings.store.subscriptions.disable(tenant_id, breaker["id"], DisableReason.BREAKER)
    await emit(api, headers)
    await receiver.wait_count("/good", 1)
    await receiver.wait_count("/bad", 1)

    async def both_recorded() -> bool:
        health = await api.tidings.store.reports.subscription_health(
            tenant_id, [good["id"], bad["id"]], 100
        )
        return all(h.attempts >= 1 for h in health.values())

    await eventually(both_recorded)
    page = (await operator.get("/portal/")).text
    rows = {sub_id: _row(page, sub_id) for sub_id in (good["id"], bad["id"], gone["id"])}
    assert "100 %" in rows[good["id"]] and ">200<" in rows[good["id"]]
    assert "0 %" in rows[bad["id"]] and ">503<" in rows[bad["id"]]
    assert "disabled by 410 Gone" in rows[gone["id"]] and "never" in rows[gone["id"]]
    assert "disabled by breaker" in _row(page, breaker["id"])


def _row(page: str, subscription_id: str) -> str:
    start = page.index(f"/portal/subscriptions/{subscription_id}")
    return page[start : page.index("</tr>", start)]


async def test_event_browser_filters_and_event_detail(start_api: Any, receiver: Receiver) -> None:
    async with start_api(retry_max_attempts=1) as api:
        headers = await admin_headers(api)
        ok_url = receiver.on("/ok", lambda n: web.Response())
        failing = receiver.on("/fail", lambda n: web.Response(status=500, text="x" * 5000))
        ok_sub = await subscribe(api, headers, ok_url, "client.created", "lead.created")
        await subscribe(api, headers, failing, "lead.created")
        client_event = await emit(api, headers, "client.created")
        lead_event = await emit(api, headers, "lead.created")
        await _until_settled(api)
        _, plaintext = await api.tidings.create_api_key("acme", ["admin"])
        async with api.new_client() as client:
            await client.post("/portal/login", data={"api_key": plaintext})
            browser = Browser(client)
            listed = (await browser.get("/portal/events")).text
            assert client_event["id"] in listed and lead_event["id"] in listed
            by_type = (await browser.get("/portal/events", type="lead.created")).text
            assert lead_event["id"] in by_type and client_event["id"] not in by_type
            failed = (await browser.get("/portal/events", status="failed")).text
            assert lead_event["id"] in failed and client_event["id"] not in failed
            to_ok = (await browser.get("/portal/events", subscription=ok_sub["id"])).text
            assert lead_event["id"] in to_ok and client_event["id"] in to_ok
            earlier = (await browser.get("/portal/events", before_time="2001-01-01T00:00")).text
            assert client_event["id"] not in earlier and "No events match" in earlier
            jump = await browser.get("/portal/events", type=lead_event["id"])
            assert jump.headers["location"] == f"/portal/events/{lead_event['id']}"

            detail = (await browser.get(f"/portal/events/{lead_event['id']}")).text
            assert ">500<" in detail and ">200<" in detail
            assert "x" * 80 in detail and "x" * 4001 not in detail  # logged at 4000 chars
            assert ">failed<" in detail and ">succeeded<" in detail
            assert "&#34;type&#34;: &#34;lead.created&#34;" in detail  # the envelope, escaped


async def _until_settled(api: Api) -> None:
    async def nothing_pending() -> bool:
        return (await api.tidings.store.queue.delivery_counts()).get("pending", 0) == 0

    await eventually(nothing_pending)


async def test_redeliver_all_failed_since_a_time(start_api: Any, receiver: Receiver) -> None:
    answers = {"status": 500}
    url = receiver.on("/flaky", lambda n: web.Response(status=answers["status"]))
    async with start_api(retry_max_attempts=1) as api:
        headers = await admin_headers(api)
        sub = await subscribe(api, headers, url, "client.created")
        old = await emit(api, headers)
        await _until_settled(api)
        since = math.ceil(time.time()) + 1
        await eventually(_clock_past(since), timeout=3)
        new = [await emit(api, headers) for _ in range(3)]
        await _until_settled(api)
        assert (await api.tidings.store.queue.delivery_counts())["failed"] == 4
        answers["status"] = 200
        _, plaintext = await api.tidings.create_api_key("acme", ["admin"])
        async with api.new_client() as client:
            await client.post("/portal/login", data={"api_key": plaintext})
            response = await Browser(client).post(
                "/portal/recover",
                {
                    "since": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(since)),
                    "subscription": sub["id"],
                },
            )
            assert response.status_code == 303
            assert "recovered=3" in response.headers["location"]
        await receiver.wait_count("/flaky", 4 + 3)
        await _until_settled(api)
        assert await api.tidings.store.queue.delivery_counts() == {"failed": 1, "succeeded": 3}
        redelivered = {r.body for r in receiver.at("/flaky")[4:]}
        assert all(any(e["id"].encode() in body for body in redelivered) for e in new)
        assert not any(old["id"].encode() in body for body in redelivered)


async def test_both_recover_forms_need_a_since(api: Api, operator: Browser) -> None:
    sub = await subscribe(api, await admin_headers(api), "http://127.0.0.1:9/x", "*")
    for path in ("/portal/recover", f"/portal/subscriptions/{sub['id']}/recover"):
        response = await operator.post(path, {"since": ""})
        assert response.status_code == 400, path
        assert "since: pick the time to recover failed deliveries from" in response.text


def _clock_past(epoch_seconds: float) -> Callable[[], Awaitable[bool]]:
    async def passed() -> bool:
        return time.time() >= epoch_seconds

    return passed


async def test_recover_api_queues_failed_deliveries_again(
    start_api: Any, receiver: Receiver
) -> None:
    answers = {"status": 500}
    url = receiver.on("/r", lambda n: web.Response(status=answers["status"]))
    async with start_api(retry_max_attempts=1) as api:
        headers = await admin_headers(api)
        sub = await subscribe(api, headers, url, "client.created")
        await emit(api, headers)
        await _until_settled(api)
        answers["status"] = 200
        path = f"/api/v1/webhooks/subscriptions/{sub['id']}/recover"
        response = await api.client.post(
            path, json={"since": "2020-01-01T00:00:00Z"}, headers=headers
        )
        assert response.status_code == 202, response.text
        assert response.json() == {"queued": 1}
        await receiver.wait_count("/r", 2)
        for bad in ({"since": "yesterday"}, {"since": "2020-01-01T00:00:00"}, {}):
            response = await api.client.post(path, json=bad, headers=headers)
            assert response.status_code == 422, bad


async def test_chart_counts_attempts_by_outcome(
    api: Api, operator: Browser, receiver: Receiver
) -> None:
    headers = await admin_headers(api)
    url = receiver.on("/c", lambda n: web.Response(status=500 if n == 1 else 200))
    await subscribe(api, headers, url, "client.created")
    await emit(api, headers)
    await receiver.wait_count("/c", 2)

    async def charted() -> bool:
        return "1 succeeded" in (await operator.get("/portal/chart")).text

    await eventually(charted)
    chart = (await operator.get("/portal/chart")).text
    assert "1 failed" in chart
    assert chart.count('class="bad"') == 1 and chart.count('class="ok"') == 1


async def test_a_consumer_link_shows_one_tenant_read_only(
    api: Api, operator: Browser, receiver: Receiver
) -> None:
    mine = await subscribe(api, await admin_headers(api), receiver.url("/mine"), "*")
    theirs = await subscribe(api, await api.key("globex", "admin"), receiver.url("/theirs"), "*")
    page = await operator.post("/portal/links", {"hours": "1"})
    link = re.search(r'id="consumer-link">([^<]+)<', page.text)
    assert link is not None
    async with api.new_client() as client:
        consumer = Browser(client)
        response = await client.get(httpx.URL(link.group(1)).raw_path.decode())
        assert response.status_code == 303
        home = (await consumer.get("/portal/")).text
        assert receiver.url("/mine") in home and receiver.url("/theirs") not in home
        assert "read only" in home and "New subscription" not in home
        assert (await consumer.get(f"/portal/subscriptions/{mine['id']}")).status_code == 200
        assert (await consumer.get(f"/portal/subscriptions/{theirs['id']}")).status_code == 404
        response = await consumer.post(f"/portal/subscriptions/{mine['id']}/disable")
        assert response.status_code == 403
        assert (await consumer.get("/portal/links")).status_code == 403
    tenant_id = await acme_tenant_id(api)
    kept = await api.tidings.store.subscriptions.get(tenant_id, mine["id"])
    assert kept is not None and kept.enabled


async def test_a_managing_link_may_change_subscriptions(api: Api, receiver: Receiver) -> None:
    headers = await admin_headers(api)
    response = await api.client.post(
        "/api/v1/portal/links", json={"ttlSeconds": 600, "canManage": True}, headers=headers
    )
    assert response.status_code == 201, response.text
    assert response.json()["canManage"] is True
    async with api.new_client() as client:
        consumer = Browser(client)
        await client.get(httpx.URL(response.json()["url"]).raw_path.decode())
        created = await consumer.post(
            "/portal/subscriptions", {"url": receiver.url("/c"), "event_types": "*"}
        )
        assert created.status_code == 201
        assert "Consumer links" not in created.text  # operators only


async def test_portal_link_api_needs_admin_and_refuses_bad_lifetimes(api: Api) -> None:
    reader = await api.key("acme", "webhooks:read")
    response = await api.client.post("/api/v1/portal/links", json={}, headers=reader)
    assert response.status_code == 403
    admin = await admin_headers(api)
    for ttl in (0, 10**9, "60"):
        response = await api.client.post(
            "/api/v1/portal/links", json={"ttlSeconds": ttl}, headers=admin
        )
        assert response.status_code == 422, ttl


async def test_a_forged_or_garbled_link_is_refused(api: Api) -> None:
    response = await api.client.get("/portal/c/not-a-token")
    assert response.status_code == 403
    assert "not valid or has expired" in response.text
    assert "tidings_portal" not in response.cookies


async def test_signing_out_ends_the_session(api: Api, operator: Browser) -> None:
    response = await operator.post("/portal/logout")
    assert response.headers["location"] == "/portal/login"
    assert (await operator.client.get("/portal/")).status_code == 303


async def test_event_pages_walk_back_through_every_event(api: Api, operator: Browser) -> None:
    headers = await admin_headers(api)
    emitted = [(await emit(api, headers))["id"] for _ in range(55)]
    first = (await operator.get("/portal/events")).text
    next_link = re.search(r'href="/portal/events\?([^"]+)">Older events', first)
    assert next_link is not None
    second = await operator.client.get("/portal/events?" + next_link.group(1).replace("&amp;", "&"))
    seen = re.findall(r'href="/portal/events/(evt_\w+)"', first + second.text)
    assert seen == list(reversed(emitted))  # newest first, each exactly once
    assert "Older events" not in second.text


async def test_a_bad_portal_address_gets_an_html_page_and_the_api_keeps_json(
    api: Api, operator: Browser
) -> None:
    for path, status in (
        ("/portal/events?before=abc", 422),
        ("/portal/events?typo=1", 422),
        ("/portal/no-such-page", 404),
    ):
        response = await operator.client.get(path)
        assert response.status_code == status, path
        assert response.headers["content-type"].startswith("text/html"), path
        assert "Back to the portal" in response.text
    response = await api.client.get("/api/v1/events?typo=1", headers=await admin_headers(api))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"
    assert (await api.client.get("/api/v1/nope")).json()["error"]["code"] == "not_found"
