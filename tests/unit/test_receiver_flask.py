"""tidings.receiver.flask through Flask's test client, with deliveries signed as tidings signs."""

from __future__ import annotations

import logging

import flask
import pytest
from flask.testing import FlaskClient

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
from tidings.receiver.flask import webhook_blueprint, webhook_view

PATH = "/webhooks/tidings"


def client_for(recorder: Recorder, *, inline: bool = True) -> FlaskClient:
    app = flask.Flask(__name__)
    executor = InlineExecutor() if inline else None
    app.register_blueprint(
        webhook_blueprint(SECRET, recorder, rule=PATH, dedup=MemoryDedupStore(), executor=executor)
    )
    return app.test_client()


def test_valid_delivery_is_accepted_and_handed_over_once() -> None:
    recorder = Recorder()
    body = envelope()
    response = client_for(recorder).post(PATH, data=body, headers=signed(body))
    assert response.status_code == 202
    assert response.get_json() == {"status": "accepted", "id": "evt_1"}
    assert recorder.events == [expected_event()]


@pytest.mark.parametrize("case", ["tampered", "stale", "unsigned", "future"])
def test_bad_deliveries_get_401_and_never_reach_the_handler(case: str) -> None:
    recorder = Recorder()
    body = envelope()
    headers = {
        "tampered": signed(body),
        "stale": signed(body, age=301),
        "future": signed(body, age=-301),
        "unsigned": {"Content-Type": "application/json"},
    }[case]
    sent = tampered(body) if case == "tampered" else body
    response = client_for(recorder).post(PATH, data=sent, headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_signature"
    assert recorder.events == []


def test_duplicate_is_answered_2xx_and_not_handed_over_again() -> None:
    recorder = Recorder()
    client = client_for(recorder)
    body = envelope()
    assert client.post(PATH, data=body, headers=signed(body)).status_code == 202
    again = client.post(PATH, data=body, headers=signed(body))  # a retry: new timestamp
    assert again.status_code == 200
    assert again.get_json() == {"status": "duplicate", "id": "evt_1"}
    assert recorder.events == [expected_event()]


def test_signed_body_that_is_not_an_envelope_gets_400() -> None:
    recorder = Recorder()
    body = b'{"hello": "world"}'
    response = client_for(recorder).post(PATH, data=body, headers=signed(body))
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_event"
    assert recorder.events == []


def test_only_post_is_answered() -> None:
    assert client_for(Recorder()).get(PATH).status_code == 405


def test_answer_does_not_wait_for_a_slow_handler() -> None:
    recorder = Recorder(blocking=True)
    body = envelope()
    response = client_for(recorder, inline=False).post(PATH, data=body, headers=signed(body))
    assert response.status_code == 202
    assert recorder.events == [], "the handler is still held while the 202 is out"
    recorder.gate.set()
    assert recorder.called.wait(5)
    assert recorder.events == [expected_event()]


def test_handler_runs_in_an_app_context() -> None:
    seen: list[str] = []
    app = flask.Flask("ctx_app")
    view = webhook_view(
        SECRET, lambda e: seen.append(flask.current_app.name), executor=InlineExecutor()
    )
    app.add_url_rule("/hook", view_func=view, methods=["POST"])
    body = envelope()
    assert app.test_client().post("/hook", data=body, headers=signed(body)).status_code == 202
    assert seen == ["ctx_app"]


def test_handler_failure_is_logged_not_answered(caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder(fail=True)
    body = envelope()
    with caplog.at_level(logging.ERROR, logger="tidings.receiver"):
        response = client_for(recorder).post(PATH, data=body, headers=signed(body))
    assert response.status_code == 202
    assert "handler failed for event evt_1" in caplog.text
