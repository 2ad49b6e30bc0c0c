"""What every receiver adapter answers, one table over Flask, Starlette and Django (each
through its framework's test client, deliveries signed as tidings signs them)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.support.receiver_adapters import ADAPTERS, Adapter
from tests.unit.test_receiver_support import (
    Recorder,
    envelope,
    expected_event,
    signed,
    tampered,
)

each_adapter = pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)


@each_adapter
def test_valid_delivery_is_accepted_and_handed_over_once(adapter: Adapter) -> None:
    recorder = Recorder()
    body = envelope()
    with adapter.site(recorder) as site:
        response = site.post(body, signed(body))
    assert response.status == 202
    assert response.json() == {"status": "accepted", "id": "evt_1"}
    assert recorder.events == [expected_event()]


@each_adapter
@pytest.mark.parametrize("case", ["tampered", "stale", "unsigned", "future"])
def test_bad_deliveries_get_401_and_never_reach_the_handler(adapter: Adapter, case: str) -> None:
    recorder = Recorder()
    body = envelope()
    headers = {
        "tampered": signed(body),
        "stale": signed(body, age=400),
        "future": signed(body, age=-400),
        "unsigned": adapter.unsigned,
    }[case]
    with adapter.site(recorder) as site:
        response = site.post(tampered(body) if case == "tampered" else body, headers)
    assert response.status == 401
    assert response.json()["error"] == "invalid_signature"
    assert recorder.events == []


@each_adapter
def test_duplicate_is_answered_2xx_and_not_handed_over_again(
    adapter: Adapter, tmp_path: Path
) -> None:
    recorder = Recorder()
    body = envelope()
    with adapter.site(recorder, adapter.dedup(tmp_path)) as site:
        assert site.post(body, signed(body)).status == 202
        again = site.post(body, signed(body))  # a retry: new timestamp
    assert again.status == 200
    assert again.json() == {"status": "duplicate", "id": "evt_1"}
    assert recorder.events == [expected_event()]


@each_adapter
def test_signed_body_that_is_not_an_envelope_gets_400(adapter: Adapter) -> None:
    recorder = Recorder()
    body = adapter.not_an_envelope
    with adapter.site(recorder) as site:
        response = site.post(body, signed(body))
    assert response.status == 400
    assert response.json()["error"] == "invalid_event"
    assert recorder.events == []


@each_adapter
def test_only_post_is_answered(adapter: Adapter) -> None:
    with adapter.site(Recorder()) as site:
        response = site.get()
    assert response.status == 405
    if adapter.allow is not None:
        assert response.headers["Allow"] == adapter.allow


@each_adapter
def test_handler_failure_is_logged_not_answered(
    adapter: Adapter, caplog: pytest.LogCaptureFixture
) -> None:
    body = envelope()
    logged = caplog.at_level(logging.ERROR, logger="tidings.receiver")
    with logged, adapter.site(Recorder(fail=True)) as site:
        response = site.post(body, signed(body))
    assert response.status == 202
    assert "handler failed for event evt_1" in caplog.text


@pytest.mark.parametrize(
    "adapter", [a for a in ADAPTERS if a.hands_over_on_a_thread], ids=lambda a: a.name
)
def test_answer_does_not_wait_for_a_slow_handler(adapter: Adapter) -> None:
    recorder = Recorder(blocking=True)
    body = envelope()
    with adapter.site(recorder, inline=False) as site:
        assert site.post(body, signed(body)).status == 202
        assert recorder.events == [], "the handler is still held while the 202 is out"
    recorder.gate.set()
    assert recorder.called.wait(5)
    assert recorder.events == [expected_event()]
