"""Whatever a browser (or someone with curl) sends the portal, the answer is never a 500."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import Api
from tests.integration.test_delivery import subscribe
from tests.support.portal import Browser

pytestmark = pytest.mark.asyncio

text = st.text(max_size=60) | st.sampled_from(
    [
        "",
        "0",
        "-1",
        "99999999999999999999",
        "nan",
        "inf",
        "1e308",
        "2026-13-45T99:99",
        "0001-01-01T00:00",
        "9999-12-31T23:59:59+14:00",
        "evt_x",
        "client.*",
        "\x00",
        "'; --",
        "custom",
        "workestra",
        "rsa-sha256",
        "5, 30, 1e400",
        "X-A: 1\nX-A: 2",
        "Host: x",
    ]
)
FORM_FIELDS = [
    "url",
    "event_types",
    "description",
    "event_type",
    "since",
    "subscription",
    "hours",
    "manage",
    "signature_scheme",
    "preset",
    "delays",
    "retry_on",
    "breaker_threshold",
    "headers",
]
forms = st.fixed_dictionaries({}, optional=dict.fromkeys(FORM_FIELDS, text))
POSTS = [
    "/portal/subscriptions",
    "/portal/subscriptions/{sub}/edit",
    "/portal/subscriptions/{sub}/test",
    "/portal/subscriptions/{sub}/recover",
    "/portal/subscriptions/{sub}/retry",
    "/portal/subscriptions/{sub}/headers",
    "/portal/subscriptions/{sub}/end-rotation",
    "/portal/recover",
    "/portal/links",
    "/portal/events/evt_missing/redeliver",
]
QUERY_FIELDS = ["type", "status", "subscription", "before_time", "before", "after", "outcome"]
GETS = ["/portal/", "/portal/events", "/portal/subscriptions/{sub}", "/portal/chart"]
FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


async def operator_with_subscription(api: Api) -> tuple[Browser, str]:
    headers = await api.key("acme", "admin")
    sub = await subscribe(api, headers, "http://127.0.0.1:9/fuzz", "client.created")
    client = api.new_client()
    await client.post("/portal/login", data={"api_key": headers["X-Api-Key"]})
    browser = Browser(client)
    await browser.get("/portal/")
    return browser, sub["id"]


@FUZZ
@given(path=st.sampled_from(POSTS), form=forms)
async def test_forms_answer_4xx_or_success_never_500(
    api: Api, path: str, form: dict[str, Any]
) -> None:
    browser, sub_id = await operator_with_subscription(api)
    try:
        response = await browser.post(path.format(sub=sub_id), form)
    finally:
        await browser.client.aclose()
    assert response.status_code < 500, (path, form, response.text[:300])


@FUZZ
@given(
    path=st.sampled_from(GETS),
    query=st.fixed_dictionaries({}, optional=dict.fromkeys(QUERY_FIELDS, text)),
)
@example(path="/portal/events", query={"before": "99999999999999999999"})
@example(path="/portal/", query={"after": "99999999999999999999"})
async def test_pages_answer_4xx_or_success_never_500(
    api: Api, path: str, query: dict[str, str]
) -> None:
    browser, sub_id = await operator_with_subscription(api)
    try:
        response = await browser.client.get(path.format(sub=sub_id), params=query)
    finally:
        await browser.client.aclose()
    assert response.status_code < 500, (path, query, response.text[:300])
