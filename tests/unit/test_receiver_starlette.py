"""tidings.receiver.starlette via Starlette's TestClient (and FastAPI), signed as tidings signs."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.testclient import TestClient

from tests.unit.test_receiver_support import (
    SECRET,
    Recorder,
    envelope,
    expected_event,
    signed,
    tampered,
)
from tidings.receiver import Event, MemoryDedupStore, SQLiteDedupStore
from tidings.receiver.starlette import webhook_endpoint, webhook_route

PATH = "/webhooks/tidings"


def client_for(handler: Any, **options: Any) -> TestClient:
    """TestClient runs background tasks before it returns, so the handler has run by then."""
    options.setdefault("dedup", MemoryDedupStore())
    app = Starlette(routes=[webhook_route(PATH, SECRET, handler, **options)])
    return TestClient(app)


def test_valid_delivery_is_accepted_and_handed_over_once() -> None:
    recorder = Recorder()
    body = envelope()
    response = client_for(recorder).post(PATH, content=body, headers=signed(body))
    assert response.status_code == 202
    assert response.json() == {"status": "accepted", "id": "evt_1"}
    assert recorder.events == [expected_event()]


def test_async_handler_is_awaited() -> None:
    got: list[Event] = []

    async def handler(event: Event) -> None:
        got.append(event)

    body = envelope()
    assert client_for(handler).post(PATH, content=body, headers=signed(body)).status_code == 202
    assert got == [expected_event()]


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
    response = client_for(recorder).post(PATH, content=sent, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_signature"
    assert recorder.events == []


def test_duplicate_is_answered_2xx_and_not_handed_over_again(tmp_path: Any) -> None:
    recorder = Recorder()
    client = client_for(recorder, dedup=SQLiteDedupStore(tmp_path / "seen.db"))
    body = envelope()
    assert client.post(PATH, content=body, headers=signed(body)).status_code == 202
    again = client.post(PATH, content=body, headers=signed(body))
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate", "id": "evt_1"}
    assert recorder.events == [expected_event()]


def test_signed_body_that_is_not_an_envelope_gets_400() -> None:
    recorder = Recorder()
    body = b"[1, 2]"
    response = client_for(recorder).post(PATH, content=body, headers=signed(body))
    assert response.status_code == 400
    assert recorder.events == []


def test_only_post_is_answered() -> None:
    assert client_for(Recorder()).get(PATH).status_code == 405


def test_fastapi_app_mounts_the_endpoint() -> None:
    recorder = Recorder()
    app = FastAPI()
    app.add_route(PATH, webhook_endpoint(SECRET, recorder), methods=["POST"])
    body = envelope()
    response = TestClient(app).post(PATH, content=body, headers=signed(body))
    assert response.status_code == 202
    assert recorder.events == [expected_event()]


def test_handler_failure_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def broken(event: Event) -> None:
        raise RuntimeError("boom")

    body = envelope()
    with caplog.at_level(logging.ERROR, logger="tidings.receiver"):
        for handler in (broken, Recorder(fail=True)):
            response = client_for(handler).post(PATH, content=body, headers=signed(body))
            assert response.status_code == 202
    assert caplog.text.count("handler failed for event evt_1") == 2


async def test_the_answer_is_sent_before_the_handler_runs() -> None:
    """Driven over raw ASGI: by the time the handler runs, the whole response is out."""
    sent: list[MutableMapping[str, Any]] = []
    sent_when_called: list[int] = []

    async def handler(event: Event) -> None:
        sent_when_called.append(len(sent))

    body = envelope()
    app = Starlette(routes=[webhook_route(PATH, SECRET, handler)])
    raw_headers = [(k.lower().encode(), v.encode()) for k, v in signed(body).items()]
    scope: dict[str, Any] = {"type": "http", "method": "POST", "path": PATH, "headers": raw_headers}
    scope |= {"query_string": b"", "http_version": "1.1", "scheme": "http", "root_path": ""}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 202
    assert sent_when_called == [2]
