"""A subscription's transformation in the portal: saved from the textarea (a script that
does not compile shown again as typed, with its line), removed, and tried on the catalog
sample or the latest event with htmx and without — the body it would send, a cancel, an
error, and whether the saved filter lets the event through."""

from __future__ import annotations

import html
import json

import pytest

from tests.conftest import Api
from tests.integration.test_portal_dialects import card, element, stored
from tests.integration.test_portal_filters import HTMX, new_subscription
from tests.support.portal import Browser

pytestmark = pytest.mark.asyncio

SLACK = """function handler(webhook) {
  const payment = webhook.payload.payload;
  if (payment.method === "sepa") { webhook.cancel = true; return webhook; }
  webhook.payload = {text: `paid ${payment.amount.amount}`};
  return webhook;
}"""


async def test_the_transformation_is_saved_and_removed(api: Api, operator: Browser) -> None:
    sub_id = await new_subscription(api)
    page = (await operator.get(f"/portal/subscriptions/{sub_id}")).text
    assert "None: every delivery sends the envelope" in element(page, "transformation-current")

    path = f"/portal/subscriptions/{sub_id}/transformation"
    saved = await operator.post(path, {"transformation": SLACK})
    assert saved.status_code == 303
    assert saved.headers["location"] == f"/portal/subscriptions/{sub_id}#transformation"
    assert (await stored(api, sub_id)).transformation == SLACK
    page = (await operator.get(f"/portal/subscriptions/{sub_id}")).text
    assert "paid ${payment.amount.amount}" in html.unescape(card(page, "transformation"))

    broken = "function handler(webhook) {\n  return webhook;;\n}}"
    refused = await operator.post(path, {"transformation": broken})
    assert refused.status_code == 422
    assert "line 3" in element(refused.text, "transformation-error")
    assert broken in html.unescape(card(refused.text, "transformation"))
    assert (await stored(api, sub_id)).transformation == SLACK

    removed = await operator.post(path, {"transformation": ""})
    assert removed.status_code == 303
    assert (await stored(api, sub_id)).transformation is None


async def test_try_it_shows_what_would_be_sent(api: Api, operator: Browser) -> None:
    """The CRM's payment.succeeded sample pays 129900 by card."""
    sub_id = await new_subscription(api)
    headers = await api.key("acme", "admin")
    await api.client.patch(
        f"/api/v1/webhooks/subscriptions/{sub_id}",
        json={"filter": {"payload.method": "sepa"}},
        headers=headers,
    )
    path = f"/portal/subscriptions/{sub_id}/transformation/try"
    form = {"event_type": "payment.succeeded", "source": "sample", "transformation": SLACK}

    sent = await operator.post(path, form, headers=HTMX)
    assert sent.status_code == 200 and "<html" not in sent.text  # the result alone
    assert json.loads(html.unescape(element(sent.text, "transformation-body"))) == {
        "text": "paid 129900"
    }
    assert "stops this event" in element(sent.text, "transformation-filter")

    thrown = {**form, "transformation": "function handler(w) {\n  throw new Error('no');\n}"}
    failed = await operator.post(path, thrown, headers=HTMX)
    assert "Failed" in failed.text and "line 2" in failed.text
    moved = {**form, "transformation": "function handler(w) { w.url = 'ftp://x/'; return w }"}
    refused = await operator.post(path, moved, headers=HTMX)
    assert "Failed" in refused.text and "the url it set" in refused.text  # as a delivery

    payload = {"amount": {"amount": 5, "currency": "EUR"}, "method": "sepa"}
    await api.client.post(
        "/api/v1/events", json={"type": "payment.succeeded", "payload": payload}, headers=headers
    )
    latest = await operator.post(path, {**form, "source": "latest"}, headers=HTMX)
    assert "Cancelled" in latest.text and "the latest event" in latest.text
    assert "lets this event through" in element(latest.text, "transformation-filter")

    whole = await operator.post(path, form)  # no script: the whole page, the script as typed
    assert whole.status_code == 200 and "Would send" in card(whole.text, "transformation")
    assert "paid ${payment" in html.unescape(card(whole.text, "transformation"))
    assert (await stored(api, sub_id)).transformation is None  # trying saves nothing
