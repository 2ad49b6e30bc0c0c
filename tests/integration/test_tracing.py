"""OpenTelemetry: one event's life is one trace, across processes (SDK's in-memory exporter).

The API and the worker are two ``Tidings`` with two tracer providers, as two processes
would be: the only thing joining their spans is the trace context stored with the event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.conftest import Api, eventually, running_api
from tests.support.receiver import Receiver
from tidings.config import Settings
from tidings.service import Tidings
from tidings.tracing.sdk import Tracing

pytestmark = pytest.mark.asyncio

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
PAYLOAD_MARK = "payload-only-7c1e9a"
ANSWER_MARK = "answer-only-52d0"


class Spans:
    """One process's tracer provider, exporting into memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracing = Tracing(provider)

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]

    async def wait(self, name: str, count: int) -> list[ReadableSpan]:
        async def enough() -> bool:
            return len(self.named(name)) >= count

        await eventually(enough, timeout=20)
        return self.named(name)


@contextlib.asynccontextmanager
async def traced_worker(settings: Settings, spans: Spans | None) -> AsyncIterator[Tidings]:
    """A dispatcher in its own ``Tidings`` (a worker process, as far as tracing can tell)."""
    worker = Tidings.from_settings(settings)
    worker.tracing = spans.tracing if spans is not None else None
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run_dispatcher(stop))
    try:
        yield worker
    finally:
        stop.set()
        await task
        await worker.close()


@contextlib.asynccontextmanager
async def traced_api(settings: Settings, spans: Spans) -> AsyncIterator[Api]:
    """The API (no dispatcher in it), tracing into ``spans``."""
    with pytest.MonkeyPatch.context() as patch:  # from_settings must not trace on its own
        patch.setattr("tidings.service.tracing_from_environment", lambda _: spans.tracing)
        async with running_api(settings, dispatcher=False) as api:
            yield api


def fail_once(count: int) -> web.Response:
    return web.Response(status=500 if count == 1 else 200, text=f"{ANSWER_MARK} {count}")


async def subscribe(api: Api, headers: dict[str, str], url: str, **extra: Any) -> dict[str, Any]:
    body = {"url": url, "eventTypes": ["client.*"], **extra}
    response = await api.client.post("/api/v1/webhooks/subscriptions", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def emit(api: Api, headers: dict[str, str]) -> dict[str, Any]:
    body = {"type": "client.created", "payload": {"name": PAYLOAD_MARK}}
    response = await api.client.post("/api/v1/events", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def span_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.span_id:016x}"


def trace_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.trace_id:032x}"


def parent_id(span: ReadableSpan) -> str | None:
    return f"{span.parent.span_id:016x}" if span.parent is not None else None


def attribute_texts(spans: Sequence[ReadableSpan]) -> list[str]:
    texts = []
    for span in spans:
        texts.append(span.name)
        texts.extend(f"{k}={v!r}" for k, v in (span.attributes or {}).items())
        texts.extend(str(e.attributes) for e in span.events)
        texts.append(str(span.status.description))
    return texts


async def test_one_event_with_a_retry_is_one_trace_across_processes(
    settings: Settings, receiver: Receiver
) -> None:
    api_spans, worker_spans = Spans(), Spans()
    url = receiver.on("/flaky", fail_once)
    async with traced_api(settings, api_spans) as api:
        key, plaintext = await api.tidings.create_api_key("acme", ["admin"])
        headers = {"X-Api-Key": plaintext}
        sub = await subscribe(api, headers, url, propagateTrace=True)
        assert sub["propagateTrace"] is True
        caller = {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}
        event = await emit(api, headers | caller)
        async with traced_worker(settings, worker_spans):
            attempts = await worker_spans.wait("tidings.deliver", 2)
            received = await receiver.wait_count("/flaky", 2)
        stored = await api.tidings.store.events.get_event(key.tenant_id, event["id"])

    [request] = api_spans.named("POST /api/v1/events")
    [emitted] = api_spans.named("tidings.emit")
    [fan_out] = api_spans.named("tidings.fan_out")
    first, second = sorted(
        attempts, key=lambda s: str((s.attributes or {})["tidings.delivery.attempt"])
    )

    # one trace, the caller's, with the right parents
    every = [request, emitted, fan_out, first, second]
    assert {trace_id(s) for s in every} == {CALLER_TRACE}
    assert parent_id(request) == CALLER_SPAN and request.kind is SpanKind.SERVER
    assert parent_id(emitted) == span_id(request)
    assert parent_id(fan_out) == span_id(emitted)
    assert parent_id(first) == parent_id(second) == span_id(fan_out)
    assert first.kind is second.kind is SpanKind.CLIENT
    assert stored is not None and stored.trace_context == f"00-{CALLER_TRACE}-{span_id(fan_out)}-01"
    assert first.start_time is not None and second.start_time is not None
    assert first.start_time < second.start_time

    # what each attempt says
    tenant = key.tenant_id
    for span, attempt, status, state in ((first, 1, 500, "pending"), (second, 2, 200, "succeeded")):
        attributes = dict(span.attributes or {})
        assert attributes["tidings.delivery.attempt"] == attempt
        assert attributes["http.response.status_code"] == status
        assert attributes["tidings.subscription.id"] == sub["id"]
        assert attributes["tidings.tenant.id"] == tenant
        assert attributes["tidings.event.id"] == event["id"]
        assert attributes["tidings.delivery.status"] == state
        assert isinstance(attributes["tidings.delivery.elapsed_ms"], int)
        assert attributes["server.address"] == "127.0.0.1"
    assert "http.request.resend_count" not in (first.attributes or {})
    assert (second.attributes or {})["http.request.resend_count"] == 1
    assert first.status.status_code is StatusCode.ERROR
    assert second.status.status_code is StatusCode.OK
    assert (emitted.attributes or {})["tidings.event.id"] == event["id"]
    assert (request.attributes or {})["http.response.status_code"] == 201

    # propagateTrace: each attempt's own context, so the receiver's spans nest under it
    assert [r.headers["traceparent"] for r in received] == [
        f"00-{CALLER_TRACE}-{span_id(first)}-01",
        f"00-{CALLER_TRACE}-{span_id(second)}-01",
    ]

    # never a secret, a key, a payload or a response body
    texts = "\n".join(attribute_texts([*api_spans.exporter.get_finished_spans(), *attempts]))
    for secret in (sub["signingSecret"], plaintext, plaintext[4:], PAYLOAD_MARK, ANSWER_MARK):
        assert secret not in texts
    assert "/flaky" not in texts, "a receiver's path may carry a token"


async def test_no_traceparent_unless_the_subscription_asks(
    settings: Settings, receiver: Receiver
) -> None:
    spans = Spans()
    async with traced_api(settings, spans) as api:
        headers = await api.key()
        plain = await subscribe(api, headers, receiver.url("/plain"))
        assert plain["propagateTrace"] is False
        changed = await api.client.patch(
            f"/api/v1/webhooks/subscriptions/{plain['id']}",
            json={"propagateTrace": True},
            headers=headers,
        )
        assert changed.json()["propagateTrace"] is True
        await api.client.patch(
            f"/api/v1/webhooks/subscriptions/{plain['id']}",
            json={"propagateTrace": False},
            headers=headers,
        )
        await emit(api, headers)
        async with traced_worker(settings, spans):
            [got] = await receiver.wait_count("/plain", 1)
            await spans.wait("tidings.deliver", 1)
    assert "traceparent" not in {name.lower() for name in got.headers}
    # a request's own traceparent was not sent: the API span is a root
    [request] = spans.named("POST /api/v1/events")
    assert request.parent is None


async def test_a_worker_that_does_not_trace_passes_the_stored_context_on(
    settings: Settings, receiver: Receiver
) -> None:
    """Tracing on in the API, off in the worker: the receiver still joins the trace, as a
    child of the fan-out span stored with the event."""
    spans = Spans()
    async with traced_api(settings, spans) as api:
        headers = await api.key()
        await subscribe(api, headers, receiver.url("/joined"), propagateTrace=True)
        await emit(api, headers)
        async with traced_worker(settings, None):
            [got] = await receiver.wait_count("/joined", 1)
    [fan_out] = spans.named("tidings.fan_out")
    assert fan_out.context is not None
    flags = f"{int(fan_out.context.trace_flags):02x}"  # sampled (and, new SDKs, random)
    assert got.headers["traceparent"] == f"00-{trace_id(fan_out)}-{span_id(fan_out)}-{flags}"


async def test_without_tracing_nothing_is_stored_or_sent(
    start_api: Callable[..., Any], receiver: Receiver
) -> None:
    async with start_api() as api:
        assert api.tidings.tracing is None
        key, plaintext = await api.tidings.create_api_key("acme", ["admin"])
        headers = {"X-Api-Key": plaintext}
        await subscribe(api, headers, receiver.url("/untraced"), propagateTrace=True)
        event = await emit(api, headers | {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"})
        [got] = await receiver.wait_count("/untraced", 1)
        stored = await api.tidings.store.events.get_event(key.tenant_id, event["id"])
    assert stored is not None and stored.trace_context is None
    assert "traceparent" not in {name.lower() for name in got.headers}
