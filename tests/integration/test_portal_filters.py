"""A subscription's filter in the portal: shown, saved from the JSON textarea (a refused
one shown again as typed, naming the path and operator), tried on the catalog sample or
the latest event, with htmx and without."""

from __future__ import annotations

import html
import json

import pytest

from tests.conftest import Api
from tests.integration.test_portal_dialects import card, element, stored
from tests.support.portal import Browser

pytestmark = pytest.mark.asyncio

URL = "http://127.0.0.1:9/f"
BIG = {"payload.amount.amount": {"$gte": 100000}}
HTMX = {"HX-Request": "true"}


async def new_subscription(api: Api) -> str:
    headers = await api.key("acme", "admin")
    body = {"url": URL, "eventTypes": ["payment.*"]}
    response = await api.client.post("/api/v1/webhooks/subscriptions", json=body, headers=headers)
    return str(response.json()["id"])


async def test_the_filter_is_saved_shown_and_removed(api: Api, operator: Browser) -> None:
    sub_id = await new_subscription(api)
    page = (await operator.get(f"/portal/subscriptions/{sub_id}")).text
    assert "None: every event of its types" in element(page, "filter-current")

    saved = await operator.post(
        f"/portal/subscriptions/{sub_id}/filter", {"filter": json.dumps(BIG)}
    )
    assert saved.status_code == 303
    assert saved.headers["location"] == f"/portal/subscriptions/{sub_id}#filter"
    assert (await stored(api, sub_id)).filter == BIG
    page = (await operator.get(f"/portal/subscriptions/{sub_id}")).text
    assert json.loads(element(page, "filter-current")) == BIG
    assert "$gte" in html.unescape(card(page, "filter"))  # the textarea holds it to edit

    removed = await operator.post(f"/portal/subscriptions/{sub_id}/filter", {"filter": "  "})
    assert removed.status_code == 303
    assert (await stored(api, sub_id)).filter is None


@pytest.mark.parametrize(
    ("typed", "said"),
    [
        ('{"payload.amount": {"$gt": "x", "$foo": 1}}', "filter.payload.amount: $foo"),
        ('{"payload.amount": ', "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"payload.x": NaN}', "not valid JSON"),
        ('{"payload.x": {"$regex": "(?<=a)"}}', "filter.payload.x: $regex"),
    ],
)
async def test_a_refused_filter_is_shown_again_as_typed_and_nothing_changes(
    api: Api, operator: Browser, typed: str, said: str
) -> None:
    sub_id = await new_subscription(api)
    await operator.post(f"/portal/subscriptions/{sub_id}/filter", {"filter": json.dumps(BIG)})
    refused = await operator.post(f"/portal/subscriptions/{sub_id}/filter", {"filter": typed})
    assert refused.status_code == 422
    assert said in element(refused.text, "filter-error")
    assert typed in html.unescape(card(refused.text, "filter"))
    assert (await stored(api, sub_id)).filter == BIG


async def test_try_it_runs_the_typed_filter_on_the_catalog_sample(
    api: Api, operator: Browser
) -> None:
    """The CRM's payment.succeeded sample pays 129900 by card."""
    sub_id = await new_subscription(api)
    path = f"/portal/subscriptions/{sub_id}/filter/try"
    form = {"event_type": "payment.succeeded", "source": "sample"}

    passes = await operator.post(path, {**form, "filter": json.dumps(BIG)}, headers=HTMX)
    assert passes.status_code == 200 and "<html" not in passes.text  # the verdict alone
    assert "Matches" in passes.text and "129900" in passes.text
    fails = await operator.post(
        path, {**form, "filter": '{"payload.method": "sepa"}'}, headers=HTMX
    )
    assert "Does not match" in fails.text
    invalid = await operator.post(path, {**form, "filter": '{"$gt": 1}'}, headers=HTMX)
    assert "Cannot try it" in invalid.text and "$gt" in html.unescape(invalid.text)
    unknown = await operator.post(
        path, {**form, "event_type": "no.such", "filter": "{}"}, headers=HTMX
    )
    assert "unknown event type" in html.unescape(unknown.text)

    whole = await operator.post(path, {**form, "filter": json.dumps(BIG)})  # no script
    assert whole.status_code == 200 and "Matches" in card(whole.text, "filter")
    assert "$gte" in html.unescape(card(whole.text, "filter"))  # still as typed
    assert (await stored(api, sub_id)).filter is None  # trying saves nothing


async def test_try_it_on_the_latest_event(api: Api, operator: Browser) -> None:
    sub_id = await new_subscription(api)
    path = f"/portal/subscriptions/{sub_id}/filter/try"
    form = {"event_type": "payment.succeeded", "source": "latest", "filter": json.dumps(BIG)}
    before = await operator.post(path, form, headers=HTMX)
    assert "no event of this type yet" in before.text and "Matches" in before.text
    headers = await api.key("acme", "admin")
    payload = {"amount": {"amount": 5, "currency": "USD"}, "method": "card"}
    await api.client.post(
        "/api/v1/events", json={"type": "payment.succeeded", "payload": payload}, headers=headers
    )
    after = await operator.post(path, form, headers=HTMX)
    assert "Does not match" in after.text and "the latest event" in after.text


async def test_a_read_only_link_sees_the_filter_but_no_form(api: Api) -> None:
    sub_id = await new_subscription(api)
    headers = await api.key("acme", "admin")
    await api.client.patch(
        f"/api/v1/webhooks/subscriptions/{sub_id}", json={"filter": BIG}, headers=headers
    )
    link = await api.client.post("/api/v1/portal/links", json={}, headers=headers)
    async with api.new_client() as client:
        await client.get(link.json()["url"].removeprefix("http://tidings"))
        page = (await client.get(f"/portal/subscriptions/{sub_id}")).text
    assert json.loads(element(page, "filter-current")) == BIG
    assert 'id="filter-form"' not in page
