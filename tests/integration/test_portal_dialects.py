"""A subscription's dialect in the portal: the signature scheme chosen at creation, what
the page says about it (headers, public key, how to verify), the retry policy presets and
form, and the write-only static headers."""

from __future__ import annotations

import html
import re
from importlib import resources
from typing import Any

import httpx
import pytest
from markupsafe import escape

from tests.conftest import Api
from tests.integration.test_delivery import subscribe
from tests.support.portal import Browser, acme_subscriptions, acme_tenant_id
from tests.support.receiver import Receiver
from tidings.domain.signatures import SignatureScheme
from tidings.domain.subscriptions import Subscription

pytestmark = pytest.mark.asyncio

SNIPPETS = resources.files("tidings.portal") / "snippets"
SCHEMES = [s.value for s in SignatureScheme]
WORKESTRA = {"delays": [5, 30, 120, 600], "breakerThreshold": 5}
GOHIGHLEVEL = {"retryOn": ["timeout", "connection", "408", "429", "5xx"]}


async def stored(api: Api, subscription_id: str) -> Subscription:
    sub = await api.tidings.store.subscriptions.get(await acme_tenant_id(api), subscription_id)
    assert sub is not None
    return sub


async def new_subscription(api: Api, receiver: Receiver, path: str = "/d") -> str:
    sub = await subscribe(api, await api.key("acme", "admin"), receiver.url(path), "*")
    return str(sub["id"])


async def create_with_scheme(
    operator: Browser, receiver: Receiver, scheme: str, path: str = "/hook"
) -> httpx.Response:
    """Post the new-subscription form: every event type, to ``receiver`` at ``path``."""
    form = {"url": receiver.url(path), "event_types": "*", "signature_scheme": scheme}
    return await operator.post("/portal/subscriptions", form)


def snippet(scheme: str, suffix: str) -> str:
    """The snippet file's text as the page must carry it: escaped once, as Jinja does."""
    return str(escape((SNIPPETS / f"{scheme}.{suffix}").read_text("utf-8")))


def element(page: str, element_id: str) -> str:
    """The text inside the element with this id (which must not nest its own tag)."""
    found = re.search(rf'id="{element_id}"[^>]*>(.*?)</', page, re.S)
    assert found is not None, f"no #{element_id} in the page"
    return html.unescape(found.group(1))


def card(page: str, card_id: str) -> str:
    start = page.index(f'<section class="card" id="{card_id}"')
    return page[start : page.index("</section>", start)]


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_each_scheme_is_offered_created_and_explained(
    api: Api, operator: Browser, receiver: Receiver, scheme: str
) -> None:
    form = (await operator.get("/portal/subscriptions/new")).text
    offered = re.findall(r'name="signature_scheme" value="([^"]+)"', form)
    assert offered == SCHEMES
    assert re.search(r'value="hmac"\s+checked', form)  # the default

    created = await create_with_scheme(operator, receiver, scheme, "/s")
    assert created.status_code == 201, created.text
    sub_id = element(created.text, "subscription-id")
    sub = await stored(api, sub_id)
    assert sub.signature_scheme.value == scheme
    page = created.text
    if scheme in ("hmac", "hmac-body"):
        assert element(page, "new-secret").startswith("whsec_")
        assert sub.public_key is None
        assert 'id="new-public-key"' not in page and 'id="public-key"' not in page
    else:
        assert sub.public_key is not None
        assert element(page, "new-public-key").strip() == sub.public_key.strip()
        assert 'id="new-secret"' not in page
        assert "whsk_" not in page and "PRIVATE KEY" not in page  # tidings keeps those
    if scheme == "rsa-sha256":
        assert sub.public_key is not None and sub.public_key.startswith("-----BEGIN PUBLIC KEY")
    if scheme == "ed25519":
        assert sub.public_key is not None and sub.public_key.startswith("whpk_")

    # Later visits: the dialect, the public key to copy, the snippets of this scheme only.
    page = (await operator.get(f"/portal/subscriptions/{sub_id}")).text
    assert element(page, "scheme") == scheme
    assert 'id="new-secret"' not in page and 'id="new-public-key"' not in page
    if sub.public_key is not None:
        assert element(page, "public-key").strip() == sub.public_key.strip()
        assert 'data-copy="public-key"' in page
    for suffix in ("node.js", "python.py"):
        assert snippet(scheme, suffix) in page
        for other in set(SCHEMES) - {scheme}:
            assert snippet(other, suffix) not in page
    assert 'data-copy="snippet-node"' in page and 'data-copy="snippet-python"' in page

    # The headers the page lists are the ones a delivery carries.
    listed = re.findall(r"<tr><td[^>]*><code>([^<]+)</code>", card_of_dialect(page))
    result = await operator.post(
        f"/portal/subscriptions/{sub_id}/test",
        {"event_type": "client.created"},
        headers={"HX-Request": "true"},
    )
    assert "Delivered" in result.text
    (request,) = receiver.at("/s")
    sent = {name.lower() for name in request.headers}
    signature_headers = {"x-webhook-signature", "webhook-signature", "x-wh-signature"}
    assert {name.lower() for name in listed} == {
        name for name in sent if name.startswith(("x-webhook", "webhook-", "x-wh-"))
    }
    assert signature_headers & sent  # the list is not empty of what matters


def card_of_dialect(page: str) -> str:
    start = page.index('id="dialect"')
    return page[start : page.index("</section>", start)]


async def test_an_unknown_scheme_is_a_form_error_and_stores_nothing(
    api: Api, operator: Browser, receiver: Receiver
) -> None:
    response = await create_with_scheme(operator, receiver, "md5")
    assert response.status_code == 422
    assert "signatureScheme: must be one of hmac, ed25519, hmac-body, rsa-sha256" in response.text
    assert 'value="md5"' not in response.text  # the choices stay the four
    assert await acme_subscriptions(api) == []


async def test_rotating_an_rsa_key_shows_the_new_public_key_and_can_end_early(
    api: Api, operator: Browser, receiver: Receiver
) -> None:
    created = await create_with_scheme(operator, receiver, "rsa-sha256")
    sub_id = element(created.text, "subscription-id")
    before = await stored(api, sub_id)
    rotated = await operator.post(f"/portal/subscriptions/{sub_id}/rotate")
    assert rotated.status_code == 200
    after = await stored(api, sub_id)
    assert after.public_key is not None and after.public_key != before.public_key
    assert element(rotated.text, "new-public-key").strip() == after.public_key.strip()
    assert "PRIVATE KEY" not in rotated.text
    assert "still signed with the <strong>previous</strong> key" in element_block(
        rotated.text, "rotation"
    )

    ended = await operator.post(f"/portal/subscriptions/{sub_id}/end-rotation")
    assert ended.status_code == 303
    assert (await stored(api, sub_id)).previous_secret_expires_ms is None
    assert 'id="rotation"' not in (await operator.get(f"/portal/subscriptions/{sub_id}")).text


async def refused(
    operator: Browser, sub_id: str, form: str, data: dict[str, str], message: str
) -> httpx.Response:
    """Post one of a subscription's forms with bad input: a 422 whose card of the same
    name (``retry``, ``headers``) says ``message``."""
    response = await operator.post(f"/portal/subscriptions/{sub_id}/{form}", data)
    assert response.status_code == 422, data
    error = f'<p class="error" role="alert">{escape(message)}'
    assert error in card(response.text, form), data
    return response


def element_block(page: str, element_id: str, end: str = "</div>") -> str:
    """The markup from the element with this id to the first ``end`` after it."""
    start = page.index(f'id="{element_id}"')
    return page[start : page.index(end, start)]


@pytest.mark.parametrize(
    ("preset", "policy", "name"),
    [
        ("workestra", WORKESTRA, "5 steps then disable"),
        ("gohighlevel", GOHIGHLEVEL, "retry only 408/429/5xx"),
    ],
)
async def test_a_preset_saves_its_policy_and_default_removes_it(
    api: Api,
    operator: Browser,
    receiver: Receiver,
    preset: str,
    policy: dict[str, Any],
    name: str,
) -> None:
    sub_id = await new_subscription(api, receiver)
    page = (await operator.get(f"/portal/subscriptions/{sub_id}")).text
    assert "exponential (default)" in element_block(page, "retry-current", "</p>")
    response = await operator.post(f"/portal/subscriptions/{sub_id}/retry", {"preset": preset})
    assert response.status_code == 303
    retry = (await stored(api, sub_id)).retry
    assert retry is not None and retry.to_dict() == policy
    headers = await api.key("acme", "admin")
    read = await api.client.get(f"/api/v1/webhooks/subscriptions/{sub_id}", headers=headers)
    assert read.json()["retryPolicy"] == policy

    page = (await operator.get(f"/portal/subscriptions/{sub_id}")).text
    assert name in element_block(page, "retry-current", "</p>")
    assert re.findall(r'name="preset" value="(\w+)" required checked', page) == [preset]

    response = await operator.post(f"/portal/subscriptions/{sub_id}/retry", {"preset": "default"})
    assert response.status_code == 303
    assert (await stored(api, sub_id)).retry is None


async def test_a_custom_policy_is_saved_and_shown_back(
    api: Api, operator: Browser, receiver: Receiver
) -> None:
    sub_id = await new_subscription(api, receiver)
    form = {
        "preset": "custom",
        "delays": "1, 2.5 60",
        "breaker_threshold": "3",
    }
    response = await operator.client.post(
        f"/portal/subscriptions/{sub_id}/retry",
        data={"csrf": await csrf_of(operator, sub_id), **form, "retry_on": ["5xx", "timeout"]},
    )
    assert response.status_code == 303, response.text
    retry = (await stored(api, sub_id)).retry
    assert retry is not None
    assert retry.to_dict() == {
        "delays": [1, 2.5, 60],
        "retryOn": ["timeout", "5xx"],
        "breakerThreshold": 3,
    }
    page = (await operator.get(f"/portal/subscriptions/{sub_id}")).text
    assert "<strong>custom</strong>" in element_block(page, "retry-current", "</p>")
    assert 'name="delays" value="1, 2.5, 60"' in page
    assert 'name="breaker_threshold" value="3"' in page
    ticked = re.findall(r'name="retry_on" value="([^"]+)" checked', page)
    assert ticked == ["timeout", "5xx"]
    assert "3 retries, after 1 s, 2.5 s, 1 min" in page

    # Every box ticked and nothing else typed: no policy of its own.
    everything = ["timeout", "connection", "408", "429", "5xx", "4xx", "3xx"]
    response = await operator.client.post(
        f"/portal/subscriptions/{sub_id}/retry",
        data={"csrf": operator.csrf, "preset": "custom", "retry_on": everything},
    )
    assert response.status_code == 303
    assert (await stored(api, sub_id)).retry is None


async def csrf_of(operator: Browser, sub_id: str) -> str:
    await operator.get(f"/portal/subscriptions/{sub_id}")
    return operator.csrf


BAD_POLICIES = [
    ({"delays": "5, soon"}, "retryPolicy.delays[1]: must be a number of seconds"),
    ({"delays": "-1"}, "retryPolicy.delays[0]: must be 0 to 604800 seconds"),
    ({"delays": "nan"}, "retryPolicy.delays[0]: must be 0 to 604800 seconds"),
    ({"delays": ", ".join(["1"] * 51)}, "retryPolicy.delays: at most 50 retries"),
    ({"breaker_threshold": "0"}, "retryPolicy.breakerThreshold: must be 1 to 10000"),
    ({"breaker_threshold": "2.5"}, "retryPolicy.breakerThreshold: must be a whole number"),
    ({"retry_on": "teapot"}, "retryPolicy.retryOn[0]: must be one of timeout"),
    ({"preset": "fastest"}, "preset: pick one of the presets or the custom form"),
]


async def test_a_bad_policy_is_shown_on_the_form_and_changes_nothing(
    api: Api, operator: Browser, receiver: Receiver
) -> None:
    sub_id = await new_subscription(api, receiver)
    await operator.post(f"/portal/subscriptions/{sub_id}/retry", {"preset": "workestra"})
    for form, message in BAD_POLICIES:
        response = await refused(operator, sub_id, "retry", {"preset": "custom", **form}, message)
        if "delays" in form:  # what was typed, to correct
            delays = f'name="delays" value="{escape(form["delays"])}"'
            assert delays in card(response.text, "retry")
        retry = (await stored(api, sub_id)).retry
        assert retry is not None and retry.to_dict() == WORKESTRA, form


async def test_headers_are_set_listed_by_name_sent_and_cleared(
    api: Api, operator: Browser, receiver: Receiver
) -> None:
    sub_id = await new_subscription(api, receiver, "/h")
    values = "Authorization: Bearer tok-51c3e7\r\n\r\nX-Tenant-Ref :  ref-99a1  \n"
    response = await operator.post(f"/portal/subscriptions/{sub_id}/headers", {"headers": values})
    assert response.status_code == 303, response.text
    assert (await stored(api, sub_id)).header_names == ("Authorization", "X-Tenant-Ref")

    page = (await operator.get(f"/portal/subscriptions/{sub_id}")).text
    names = re.findall(r"<li><code>([^<]+)</code></li>", card(page, "headers"))
    assert names == ["Authorization", "X-Tenant-Ref"]
    assert "tok-51c3e7" not in page and "ref-99a1" not in page  # values are never shown
    assert 'class="static-header"' in page

    await operator.post(
        f"/portal/subscriptions/{sub_id}/test",
        {"event_type": "client.created"},
        headers={"HX-Request": "true"},
    )
    (request,) = receiver.at("/h")
    sent = {k.lower(): v for k, v in request.headers.items()}
    assert sent["authorization"] == "Bearer tok-51c3e7"
    assert sent["x-tenant-ref"] == "ref-99a1"

    response = await operator.post(f"/portal/subscriptions/{sub_id}/headers", {"headers": ""})
    assert response.status_code == 303
    assert (await stored(api, sub_id)).header_names == ()
    page = (await operator.get(f"/portal/subscriptions/{sub_id}")).text
    assert re.findall(r"<li><code>([^<]+)</code></li>", card(page, "headers")) == []
    assert "None: deliveries carry only the signature headers below." in page
    assert 'class="static-header"' not in page


BAD_HEADERS = [
    ("Bad Name: v-secret-1", "headers.Bad Name: not a valid header name"),
    ("X-WH-Signature: v-secret-1", "headers.X-WH-Signature: tidings sets this header itself"),
    ("content-type: v-secret-1", "headers.content-type: tidings sets this header itself"),
    ("X-A: 1\nX-A: v-secret-1", "headers.X-A: given twice"),
    ("X-A: 1\nx-a: v-secret-1", "headers.x-a: given twice"),
    ("X-A v-secret-1", "headers: line 1: write one header per line as Name: value"),
    ("\nX-A: 1\n: v-secret-1", "headers: line 3: write one header per line as Name: value"),
    ("X-A: v-secret-1\u00e9", "headers.X-A: must be printable ASCII on one line"),
]


async def test_bad_headers_are_a_form_error_that_never_echoes_a_value(
    api: Api, operator: Browser, receiver: Receiver
) -> None:
    sub_id = await new_subscription(api, receiver)
    await operator.post(f"/portal/subscriptions/{sub_id}/headers", {"headers": "X-Kept: 1"})
    for text, message in BAD_HEADERS:
        response = await refused(operator, sub_id, "headers", {"headers": text}, message)
        assert "v-secret-1" not in response.text
        assert (await stored(api, sub_id)).header_names == ("X-Kept",)


async def test_a_read_only_link_sees_the_dialect_but_changes_nothing(
    api: Api, operator: Browser, receiver: Receiver
) -> None:
    created = await create_with_scheme(operator, receiver, "ed25519")
    sub_id = element(created.text, "subscription-id")
    await operator.post(f"/portal/subscriptions/{sub_id}/retry", {"preset": "gohighlevel"})
    await operator.post(f"/portal/subscriptions/{sub_id}/headers", {"headers": "X-Key: k-77f"})
    link_page = await operator.post("/portal/links", {"hours": "1"})
    link = element(link_page.text, "consumer-link")
    public_key = (await stored(api, sub_id)).public_key
    assert public_key is not None

    async with api.new_client() as client:
        consumer = Browser(client)
        await client.get(httpx.URL(link).raw_path.decode())
        page = (await consumer.get(f"/portal/subscriptions/{sub_id}")).text
        assert element(page, "scheme") == "ed25519"
        assert element(page, "public-key").strip() == public_key
        assert snippet("ed25519", "node.js") in page
        assert "retry only 408/429/5xx" in element_block(page, "retry-current", "</p>")
        assert "X-Key" in card(page, "headers") and "k-77f" not in page
        for form in ("retry", "headers", "end-rotation"):
            assert f'action="/portal/subscriptions/{sub_id}/{form}"' not in page
        for form, data in (("retry", {"preset": "default"}), ("headers", {"headers": ""})):
            response = await consumer.post(f"/portal/subscriptions/{sub_id}/{form}", data)
            assert response.status_code == 403

    kept = await stored(api, sub_id)
    assert kept.retry is not None and kept.retry.to_dict() == GOHIGHLEVEL
    assert kept.header_names == ("X-Key",)


async def test_a_managing_link_edits_retries_and_headers(api: Api, receiver: Receiver) -> None:
    headers = await api.key("acme", "admin")
    sub_id = await new_subscription(api, receiver)
    response = await api.client.post(
        "/api/v1/portal/links", json={"ttlSeconds": 600, "canManage": True}, headers=headers
    )
    async with api.new_client() as client:
        consumer = Browser(client)
        await client.get(httpx.URL(response.json()["url"]).raw_path.decode())
        path = f"/portal/subscriptions/{sub_id}"
        page = (await consumer.get(path)).text
        assert f'action="{path}/retry"' in page
        retry = await consumer.post(f"{path}/retry", {"preset": "workestra"})
        assert retry.status_code == 303
        set_headers = await consumer.post(f"{path}/headers", {"headers": "X-From: consumer"})
        assert set_headers.status_code == 303
    sub = await stored(api, sub_id)
    assert sub.retry is not None and sub.retry.to_dict() == WORKESTRA
    assert sub.header_names == ("X-From",)


async def test_the_new_forms_need_the_sessions_csrf_token(
    api: Api, operator: Browser, receiver: Receiver
) -> None:
    sub_id = await new_subscription(api, receiver)
    for form, data in (
        ("retry", {"preset": "workestra"}),
        ("headers", {"headers": "X-A: 1"}),
        ("end-rotation", {}),
    ):
        response = await operator.client.post(
            f"/portal/subscriptions/{sub_id}/{form}", data={"csrf": "0" * 40, **data}
        )
        assert response.status_code == 403, form
    sub = await stored(api, sub_id)
    assert sub.retry is None and sub.header_names == ()
