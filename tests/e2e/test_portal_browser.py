"""The portal in a real browser: Debian's chromium, headless, driven by Playwright.

Against the real ``tidings serve`` and a real receiver: sign in, create a subscription,
send a test, see the delivery in the log, disable it, hand out a consumer link, revoke an
API key, sign out; create an rsa-sha256 subscription, copy its public key, read how to
verify it and give it a retry preset.
Screenshots of each main page land in ``test-artifacts/portal/<database>/``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    ViewportSize,
    async_playwright,
    expect,
)

from tests.conftest import eventually
from tests.support.receiver import Receiver
from tidings.receiver import verify

pytestmark = pytest.mark.asyncio

CHROMIUM = os.environ.get("TIDINGS_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).parents[2] / "test-artifacts" / "portal"
# Headless and quiet: no first-run UI, no calls home (this machine has no outside network).
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
VIEWPORT: ViewportSize = {"width": 1280, "height": 860}


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"no chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        expect.set_options(timeout=10_000)
        yield launched
        await launched.close()


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Path:
    folder: Path = ARTIFACTS / request.node.callspec.id
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def sign_in(page: Page, base: str, key: str) -> None:
    await page.goto(f"{base}/portal/")
    await expect(page).to_have_url(f"{base}/portal/login?next=%2Fportal%2F")
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(f"{base}/portal/")


async def signed_in_page(
    browser: Browser, base: str, key: str, **options: Any
) -> tuple[BrowserContext, Page]:
    """A new browser context (``options`` as Playwright's) and its page, signed in."""
    context = await browser.new_context(viewport=VIEWPORT, **options)
    page = await context.new_page()
    await sign_in(page, base, key)
    return context, page


async def new_subscription_form(page: Page, url: str, event_types: str) -> None:
    """Open the new-subscription form and fill in its endpoint and event types."""
    await page.get_by_role("link", name="New subscription").click()
    await page.get_by_label("Endpoint URL").fill(url)
    await page.get_by_label("Event types").fill(event_types)


async def test_operator_creates_tests_watches_and_disables_a_subscription(
    server: tuple[str, str], receiver: Receiver, browser: Browser, shots: Path
) -> None:
    base, key = server
    context, page = await signed_in_page(browser, base, key)

    await new_subscription_form(page, receiver.url("/browser"), "client.*")
    await page.get_by_label("Description").fill("Billing service")
    await shots_of(page, shots / "01-new-subscription.png")
    await page.get_by_role("button", name="Create subscription").click()
    secret = (await page.locator("#new-secret").inner_text()).strip()
    assert secret.startswith("whsec_")
    await expect(page.locator("#status")).to_have_text("active")
    subscription_id = await page.locator("#subscription-id").inner_text()

    # A test send, answered in place by htmx: the receiver can verify it with the secret.
    await page.locator("#test-form select[name=event_type]").select_option("client.created")
    await page.get_by_role("button", name="Send test").click()
    await expect(page.locator(".test-result")).to_contain_text("Delivered")
    (test_request,) = receiver.at("/browser")
    verify(secret, test_request.headers, test_request.body)
    await shots_of(page, shots / "02-test-sent.png")

    # A real event: once its attempt is recorded, the log on the page shows it.
    async with httpx.AsyncClient(base_url=base, headers={"X-Api-Key": key}) as api:
        emitted = (
            await api.post("/api/v1/events", json={"type": "client.created", "payload": {}})
        ).json()

        async def attempt_recorded() -> bool:
            response = await api.get(f"/api/v1/events/{emitted['id']}/deliveries")
            return len(response.json()) == 1

        await eventually(attempt_recorded)
        await page.goto(f"{base}/portal/subscriptions/{subscription_id}")
        row = page.locator("tr.attempt", has_text=emitted["id"])
        await expect(row).to_have_count(1)
        await expect(row.locator(".badge")).to_have_text("200")
        await shots_of(page, shots / "03-subscription-log.png")

        await page.get_by_role("button", name="Disable").click()
        await expect(page.locator("#status")).to_have_text("disabled")
        stored = (await api.get(f"/api/v1/webhooks/subscriptions/{subscription_id}")).json()
        assert stored["enabled"] is False

    await page.get_by_role("link", name="Events", exact=True).click()
    await expect(page.locator("table.events")).to_contain_text(emitted["id"])
    await shots_of(page, shots / "04-events.png")
    await page.get_by_role("link", name=emitted["id"]).click()
    await expect(page.locator("h1")).to_have_text("client.created")
    await expect(page.locator("tr.attempt")).to_have_count(1)
    await shots_of(page, shots / "05-event.png")

    await page.get_by_role("link", name="Subscriptions").click()
    await expect(page.locator("table.list")).to_contain_text("disabled")
    await expect(page.locator("#chart figcaption")).to_contain_text("1 succeeded")
    await shots_of(page, shots / "06-home.png")
    await context.close()


async def test_a_consumer_link_opens_one_tenants_portal_read_only(
    server: tuple[str, str], receiver: Receiver, browser: Browser, shots: Path
) -> None:
    base, key = server
    async with httpx.AsyncClient(base_url=base, headers={"X-Api-Key": key}) as api:
        created = await api.post(
            "/api/v1/webhooks/subscriptions",
            json={"url": receiver.url("/consumer"), "eventTypes": ["*"]},
        )
        assert created.status_code == 201, created.text

    operator, page = await signed_in_page(browser, base, key)
    await page.get_by_role("link", name="Consumer links").click()
    await page.get_by_label("Valid for (hours)").fill("2")
    await page.get_by_role("button", name="Create link").click()
    link = (await page.locator("#consumer-link").inner_text()).strip()
    await shots_of(page, shots / "07-consumer-link.png")
    await operator.close()

    customer = await browser.new_context(viewport=VIEWPORT)
    page = await customer.new_page()
    await page.goto(link)
    await expect(page).to_have_url(f"{base}/portal/")
    await expect(page.locator(".who .badge")).to_have_text("consumer · read only")
    await expect(page.locator("table.list")).to_contain_text(receiver.url("/consumer"))
    await expect(page.get_by_role("link", name="New subscription")).to_have_count(0)
    await expect(page.get_by_role("link", name="Consumer links")).to_have_count(0)
    await shots_of(page, shots / "08-consumer-home.png")
    await customer.close()


async def test_an_operator_revokes_a_key_and_a_signed_out_cookie_stays_dead(
    server: tuple[str, str], browser: Browser, shots: Path
) -> None:
    base, key = server
    context, page = await signed_in_page(browser, base, key)
    page.on("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("link", name="API keys").click()
    await page.get_by_label("events:read").check()
    await page.get_by_role("button", name="Create key").click()
    new_key = (await page.locator("#new-key").inner_text()).strip()
    assert new_key.startswith("tdg_")
    row = page.locator("tr.key-row", has_text=new_key[:12])
    await row.get_by_role("button", name="Revoke").click()
    await expect(row.locator(".badge.bad")).to_contain_text("revoked")
    await shots_of(page, shots / "09-keys.png")
    async with httpx.AsyncClient(base_url=base, headers={"X-Api-Key": new_key}) as api:
        assert (await api.get("/api/v1/events")).status_code == 401

    signed_in = await context.cookies()
    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(f"{base}/portal/login")
    await context.add_cookies(cast(Any, signed_in))  # the old cookie, replayed
    await page.goto(f"{base}/portal/keys")
    await expect(page).to_have_url(f"{base}/portal/login?next=%2Fportal%2Fkeys")
    await context.close()


async def test_an_rsa_subscription_shows_its_key_and_how_to_verify_and_takes_a_preset(
    server: tuple[str, str], receiver: Receiver, browser: Browser, shots: Path
) -> None:
    base, key = server
    context, page = await signed_in_page(
        browser, base, key, permissions=["clipboard-read", "clipboard-write"]
    )
    await new_subscription_form(page, receiver.url("/rsa"), "client.*")
    await page.get_by_role("radio", name="rsa-sha256").check()
    await shots_of(page, shots / "10-new-rsa-subscription.png")
    await page.get_by_role("button", name="Create subscription").click()

    # Shown at once: the public key (tidings keeps the private one), then on the page for good.
    pem = (await page.locator("#new-public-key").inner_text()).strip()
    assert pem.startswith("-----BEGIN PUBLIC KEY-----") and pem.endswith("-----END PUBLIC KEY-----")
    await expect(page.locator("#new-secret")).to_have_count(0)
    await expect(page.locator("#scheme")).to_have_text("rsa-sha256")
    assert ((await page.locator("#public-key").text_content()) or "").strip() == pem
    await page.locator('button[data-copy="public-key"]').click()
    await expect(page.locator('button[data-copy="public-key"]')).to_have_text("Copied")
    assert (await page.evaluate("navigator.clipboard.readText()")).strip() == pem

    # How to verify: the Node snippet for this scheme, exactly as shipped.
    node = page.locator("#snippet-node")
    await expect(node).to_be_visible()
    shipped = resources.files("tidings.portal") / "snippets" / "rsa-sha256.node.js"
    assert await node.text_content() == shipped.read_text("utf-8")
    await shots_of(page, shots / "11-rsa-subscription.png")

    # The key on the page verifies what the receiver gets.
    await page.locator("#test-form select[name=event_type]").select_option("client.created")
    await page.get_by_role("button", name="Send test").click()
    await expect(page.locator(".test-result")).to_contain_text("Delivered")
    (sent,) = receiver.at("/rsa")
    public_key = load_pem_public_key(pem.encode())
    assert isinstance(public_key, rsa.RSAPublicKey)
    signature = base64.b64decode({k.lower(): v for k, v in sent.headers.items()}["x-wh-signature"])
    public_key.verify(signature, sent.body, padding.PKCS1v15(), hashes.SHA256())

    # Workestra's retries: four retries, then the breaker at five failures.
    await page.get_by_role("radio", name="5 steps then disable").check()
    await page.get_by_role("button", name="Apply preset").click()
    await expect(page.locator("#retry-current")).to_contain_text("5 steps then disable")
    await expect(page.locator("#retry-lines")).to_contain_text("4 retries, after 5 s, 30 s, 2 min")
    subscription_id = await page.locator("#subscription-id").inner_text()
    async with httpx.AsyncClient(base_url=base, headers={"X-Api-Key": key}) as api:
        stored = (await api.get(f"/api/v1/webhooks/subscriptions/{subscription_id}")).json()
    assert stored["signatureScheme"] == "rsa-sha256"
    assert stored["retryPolicy"] == {"delays": [5, 30, 120, 600], "breakerThreshold": 5}
    await shots_of(page, shots / "12-retry-preset.png")
    await context.close()


async def test_filter_and_transformation_are_tried_live_then_saved(
    server: tuple[str, str], receiver: Receiver, browser: Browser, shots: Path
) -> None:
    """The two programmable options' cards, in a real browser: "Try it" answers in place
    (htmx) with the body the script would send and whether the filter matches; saving the
    script changes what the receiver gets."""
    base, key = server
    context, page = await signed_in_page(browser, base, key)
    await new_subscription_form(page, receiver.url("/slack"), "client.*")
    await page.get_by_role("button", name="Create subscription").click()
    await expect(page.locator("#status")).to_have_text("active")

    card = page.locator("#filter-form")
    await card.locator("textarea").fill('{"type": "client.created"}')
    await card.locator("select[name=event_type]").select_option("client.created")
    await card.get_by_role("button", name="Try it").click()
    await expect(page.locator("#filter-verdict")).to_contain_text("Matches")

    script = (
        "function handler(webhook) {\n"
        "  webhook.payload = {text: `new client ${webhook.payload.payload.clientId}`};\n"
        "  return webhook;\n"
        "}"
    )
    card = page.locator("#transformation-form")
    await card.locator("textarea").fill(script)
    await card.locator("select[name=event_type]").select_option("client.created")
    await card.get_by_role("button", name="Try it").click()
    await expect(page.locator("#transformation-body")).to_contain_text('"text": "new client')
    await shots_of(page, shots / "13-transformation-try.png")
    await card.get_by_role("button", name="Save transformation").click()
    await expect(page.locator("#transformation-current")).to_contain_text("before it is signed")

    await page.locator("#test-form select[name=event_type]").select_option("client.created")
    await page.get_by_role("button", name="Send test").click()
    await expect(page.locator(".test-result").first).to_contain_text("Delivered")
    (sent,) = receiver.at("/slack")
    assert json.loads(sent.body)["text"].startswith("new client ")
    await context.close()


async def shots_of(page: Page, path: Path) -> None:
    await page.screenshot(path=str(path), full_page=True)
