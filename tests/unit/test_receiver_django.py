"""tidings.receiver.django through Django's test Client, with minimal settings and CSRF on."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import django
import pytest
from django.conf import settings
from django.test import Client, override_settings
from django.urls import path

from tests.unit.test_receiver_support import (
    SECRET,
    InlineExecutor,
    Recorder,
    envelope,
    expected_event,
    signed,
    tampered,
)
from tidings.receiver import MemoryDedupStore
from tidings.receiver.django import webhook_view

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="tidings-receiver-tests",
        ALLOWED_HOSTS=["testserver"],
        INSTALLED_APPS=[],
        DATABASES={},
        MIDDLEWARE=[
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
        ],
    )
    django.setup()

PATH = "/webhooks/tidings"


class UrlConf:
    """A URLconf object (hashable, unlike SimpleNamespace), so each test routes its own view."""

    def __init__(self, urlpatterns: list[Any]) -> None:
        self.urlpatterns = urlpatterns


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def serve(handler: Any, *, inline: bool = True) -> Iterator[Client]:
    view = webhook_view(
        SECRET,
        handler,
        dedup=MemoryDedupStore(),
        executor=InlineExecutor() if inline else None,
    )
    urls = UrlConf([path(PATH.lstrip("/"), view)])
    with override_settings(ROOT_URLCONF=urls):
        yield Client(enforce_csrf_checks=True)  # the view must be exempt


@pytest.fixture
def client(recorder: Recorder) -> Iterator[Client]:
    yield from serve(recorder)


def post(client: Client, body: bytes, headers: dict[str, str]) -> Any:
    return client.post(PATH, data=body, content_type="application/json", headers=headers)


def test_valid_delivery_is_accepted_and_handed_over_once(
    client: Client, recorder: Recorder
) -> None:
    body = envelope()
    response = post(client, body, signed(body))
    assert response.status_code == 202
    assert response.json() == {"status": "accepted", "id": "evt_1"}
    assert recorder.events == [expected_event()]


@pytest.mark.parametrize("case", ["tampered", "stale", "unsigned", "future"])
def test_bad_deliveries_get_401_and_never_reach_the_handler(
    client: Client, recorder: Recorder, case: str
) -> None:
    body = envelope()
    headers = {
        "tampered": signed(body),
        "stale": signed(body, age=301),
        "future": signed(body, age=-301),
        "unsigned": {},
    }[case]
    response = post(client, tampered(body) if case == "tampered" else body, headers)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_signature"
    assert recorder.events == []


def test_duplicate_is_answered_2xx_and_not_handed_over_again(
    client: Client, recorder: Recorder
) -> None:
    body = envelope()
    assert post(client, body, signed(body)).status_code == 202
    again = post(client, body, signed(body))
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate", "id": "evt_1"}
    assert recorder.events == [expected_event()]


def test_signed_body_that_is_not_an_envelope_gets_400(client: Client, recorder: Recorder) -> None:
    body = b'"just a string"'
    assert post(client, body, signed(body)).status_code == 400
    assert recorder.events == []


def test_only_post_is_answered(client: Client) -> None:
    response = client.get(PATH)
    assert response.status_code == 405
    assert response["Allow"] == "POST"


def test_answer_does_not_wait_for_a_slow_handler() -> None:
    recorder = Recorder(blocking=True)
    body = envelope()
    for client in serve(recorder, inline=False):
        assert post(client, body, signed(body)).status_code == 202
        assert recorder.events == [], "the handler is still held while the 202 is out"
    recorder.gate.set()
    assert recorder.called.wait(5)
    assert recorder.events == [expected_event()]


def test_handler_failure_is_logged_not_answered(caplog: pytest.LogCaptureFixture) -> None:
    body = envelope()
    with caplog.at_level(logging.ERROR, logger="tidings.receiver"):
        for client in serve(Recorder(fail=True)):
            assert post(client, body, signed(body)).status_code == 202
    assert "handler failed for event evt_1" in caplog.text
