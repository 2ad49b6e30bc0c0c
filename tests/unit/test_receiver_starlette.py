"""tidings.receiver.starlette (and FastAPI) beyond what every adapter answers
(test_receiver_adapters.py)."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.testclient import TestClient

from tests.support.receiver_adapters import PATH, STARLETTE
from tests.unit.test_receiver_support import SECRET, Recorder, envelope, expected_event, signed
from tidings.receiver import Event
from tidings.receiver.starlette import webhook_endpoint, webhook_route


def test_async_handler_is_awaited() -> None:
    got: list[Event] = []

    async def handler(event: Event) -> None:
        got.append(event)

    body = envelope()
    with STARLETTE.site(handler) as site:
        assert site.post(body, signed(body)).status == 202
    assert got == [expected_event()]


def test_fastapi_app_mounts_the_endpoint() -> None:
    recorder = Recorder()
    app = FastAPI()
    app.add_route(PATH, webhook_endpoint(SECRET, recorder), methods=["POST"])
    body = envelope()
    response = TestClient(app).post(PATH, content=body, headers=signed(body))
    assert response.status_code == 202
    assert recorder.events == [expected_event()]


def test_async_handler_failure_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def broken(event: Event) -> None:
        raise RuntimeError("boom")

    body = envelope()
    with caplog.at_level(logging.ERROR, logger="tidings.receiver"), STARLETTE.site(broken) as site:
        assert site.post(body, signed(body)).status == 202
    assert "handler failed for event evt_1" in caplog.text


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
