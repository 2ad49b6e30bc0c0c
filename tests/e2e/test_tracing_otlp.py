"""A real ``tidings serve`` exports its spans over OTLP/HTTP, configured by ``OTEL_*`` alone.

No collector installs from Debian or PyPI, so the collector is a small aiohttp server in
the test that decodes each ``ExportTraceServiceRequest`` (opentelemetry-proto).
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.support.processes import create_key, serving
from tests.support.receiver import Receiver
from tests.support.servers import LocalServer

pytestmark = pytest.mark.asyncio

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


@dataclass(frozen=True)
class Exported:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    attributes: dict[str, Any]
    status: int


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


class Collector(LocalServer):
    """Receives OTLP/HTTP protobuf exports on 127.0.0.1 and keeps every span."""

    def __init__(self) -> None:
        super().__init__()
        self.spans: list[Exported] = []
        self.requests = 0
        self._changed = asyncio.Condition()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/traces", self._export)

    async def _export(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest()
        export.ParseFromString(body)
        for resource_spans in export.resource_spans:
            service = _attributes(resource_spans.resource.attributes).get("service.name", "")
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(_exported(service, span))
        self.requests += 1
        async with self._changed:
            self._changed.notify_all()
        answer = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=answer, content_type="application/x-protobuf")

    def named(self, name: str) -> list[Exported]:
        return [s for s in self.spans if s.name == name]

    async def wait_for(self, done: Callable[[], bool], timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(done)


def _exported(service: str, span: Span) -> Exported:
    return Exported(
        service=service,
        name=span.name,
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_id=span.parent_span_id.hex(),
        kind=span.kind,
        attributes=_attributes(span.attributes),
        status=span.status.code,
    )


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    async with Collector() as running:
        yield running


def fail_once(count: int) -> web.Response:
    return web.Response(status=500 if count == 1 else 200, text="ok")


async def test_a_served_event_with_a_retry_is_exported_as_one_trace(
    tmp_path: Path, server_env: dict[str, str], collector: Collector, receiver: Receiver
) -> None:
    key = create_key(server_env)  # the CLI without OTEL_*: nothing of it is traced
    env = server_env | {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}",
        "OTEL_SERVICE_NAME": "tidings-e2e",
        "OTEL_BSP_SCHEDULE_DELAY": "50",  # ms: export soon, not every 5 s
    }
    url = receiver.on("/traced", fail_once)
    async with serving(env, tmp_path) as (base, _), httpx.AsyncClient(base_url=base) as client:
        headers = {"X-Api-Key": key}
        created = await client.post(
            "/api/v1/webhooks/subscriptions",
            json={"url": url, "eventTypes": ["*"], "propagateTrace": True},
            headers=headers,
        )
        assert created.status_code == 201, created.text
        caller = {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}
        emitted = await client.post(
            "/api/v1/events",
            json={"type": "client.created", "payload": {"name": "Ada"}},
            headers=headers | caller,
        )
        assert emitted.status_code == 201, emitted.text
        received = await receiver.wait_count("/traced", 2)
        await collector.wait_for(lambda: len(collector.named("tidings.deliver")) >= 2)

    [request] = collector.named("POST /api/v1/events")
    [emit] = collector.named("tidings.emit")
    [fan_out] = collector.named("tidings.fan_out")
    first, second = sorted(
        collector.named("tidings.deliver"), key=lambda s: s.attributes["tidings.delivery.attempt"]
    )
    every = [request, emit, fan_out, first, second]
    assert {s.trace_id for s in every} == {CALLER_TRACE}
    assert {s.service for s in every} == {"tidings-e2e"}
    assert request.parent_id == CALLER_SPAN and request.kind == Span.SPAN_KIND_SERVER
    assert emit.parent_id == request.span_id
    assert fan_out.parent_id == emit.span_id
    assert first.parent_id == second.parent_id == fan_out.span_id
    assert first.kind == second.kind == Span.SPAN_KIND_CLIENT
    assert (first.attributes["http.response.status_code"], first.status) == (
        500,
        Status.STATUS_CODE_ERROR,
    )
    assert (second.attributes["http.response.status_code"], second.status) == (
        200,
        Status.STATUS_CODE_OK,
    )
    assert first.attributes["tidings.subscription.id"] == created.json()["id"]
    assert first.attributes["tidings.event.id"] == emitted.json()["id"]
    assert [r.headers["traceparent"] for r in received] == [
        f"00-{CALLER_TRACE}-{first.span_id}-01",
        f"00-{CALLER_TRACE}-{second.span_id}-01",
    ]
    # probes and scrapes are not traced
    assert not [s for s in collector.spans if "healthz" in s.name]
