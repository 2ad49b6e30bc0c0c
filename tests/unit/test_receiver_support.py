"""Shared by the receiver adapter tests: signed deliveries and a handler that records."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from datetime import UTC, datetime
from typing import ParamSpec, TypeVar

from tidings.domain.events import Envelope
from tidings.domain.signatures import signature_headers
from tidings.receiver import Event

P = ParamSpec("P")
T = TypeVar("T")

SECRET = "whsec_" + base64.b64encode(b"receiver-test-secret-32-bytes!!!").decode()
CREATED_MS = 1_700_000_000_000


def envelope(event_id: str = "evt_1") -> bytes:
    return (
        Envelope(
            id=event_id,
            type="client.created",
            created_ms=CREATED_MS,
            company_id="acme",
            payload={"clientId": "cli_42", "name": "Ada"},
            metadata={"source": "test"},
        )
        .to_json()
        .encode()
    )


def expected_event(event_id: str = "evt_1") -> Event:
    return Event(
        id=event_id,
        type="client.created",
        created_utc=datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC),
        company_id="acme",
        payload={"clientId": "cli_42", "name": "Ada"},
        metadata={"source": "test"},
    )


def signed(body: bytes, event_id: str = "evt_1", age: int = 0) -> dict[str, str]:
    """Both header sets, as the dispatcher sends them, signed ``age`` seconds ago."""
    headers = signature_headers([SECRET], event_id, int(time.time()) - age, body)
    return {**headers, "Content-Type": "application/json"}


def tampered(body: bytes) -> bytes:
    return body.replace(b"Ada", b"Eve")


class Recorder:
    """A handler that records the events it gets; ``gate`` (if set) holds it until released."""

    def __init__(self, *, blocking: bool = False, fail: bool = False) -> None:
        self.events: list[Event] = []
        self.called = threading.Event()
        self.gate = threading.Event()
        self._blocking = blocking
        self._fail = fail

    def __call__(self, event: Event) -> None:
        if self._blocking:
            self.gate.wait(10)
        self.events.append(event)
        self.called.set()
        if self._fail:
            raise RuntimeError("handler failed")


class InlineExecutor(Executor):
    """Runs each task at once, so tests need not wait for a thread."""

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future
