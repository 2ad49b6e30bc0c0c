"""The OpenTelemetry glue: every span tidings makes is made here (the only module that
imports OpenTelemetry; it is imported only when tracing is on, see ``tidings.tracing``).

The life of one event is one trace, across processes:

* ``<METHOD> <route>`` (server) -- the API request, continuing a caller's ``traceparent``;
* ``tidings.emit`` -- validating and storing the event (``Tidings.emit``);
* ``tidings.fan_out`` -- the store's one transaction writing the event and queueing its
  deliveries. Its context is stored with the event (``events.trace_context``, a W3C
  ``traceparent``), so whichever worker process claims a delivery continues the trace;
* ``tidings.deliver`` (client) -- one per attempt, a child of ``tidings.fan_out``:
  attempt number, status code, elapsed time, subscription, tenant, the next state. With
  ``propagateTrace`` the receiver gets this span's ``traceparent``.

Attributes name things (ids, types, status codes, the receiver's host); never a secret,
a header value, a payload, a response body or a URL's path or query.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import SplitResult, urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidings import __version__
from tidings.domain.deliveries import AttemptResult, Verdict
from tidings.storage.records import ClaimedDelivery

PROPAGATOR = TraceContextTextMapPropagator()
UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Probes and scrapes: a span every few seconds that tells nobody anything."""


def traceparent(span: Span) -> str | None:
    """The W3C ``traceparent`` naming ``span`` (None for an invalid span)."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def context_of(stored: str | None) -> otel_context.Context | None:
    """The context a stored ``traceparent`` names (None: none, or not a valid one)."""
    if not stored:
        return None
    ctx = PROPAGATOR.extract({"traceparent": stored})
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def failed(span: Span, error_type: str) -> None:
    span.set_attribute("error.type", error_type)
    span.set_status(StatusCode.ERROR, error_type)


class Tracing:
    """Spans for one process, from one ``TracerProvider``."""

    def __init__(self, provider: trace.TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("tidings", __version__)

    @classmethod
    def from_environment(cls, exporters: Sequence[str]) -> Tracing:
        """A provider exporting in batches to ``exporters`` (``otlp``, ``console``),
        configured by the SDK from the ``OTEL_*`` variables."""
        resource = Resource.create({})
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": "tidings"}))
        provider = TracerProvider(resource=resource)
        for name in exporters:
            exporter: SpanExporter
            if name == "console":
                exporter = ConsoleSpanExporter()
            else:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )

                exporter = OTLPSpanExporter()
            processor: SpanProcessor = BatchSpanProcessor(exporter)
            provider.add_span_processor(processor)
        return cls(provider)

    def shutdown(self) -> None:
        """Export what is left (``TracerProvider.shutdown`` flushes its processors)."""
        shutdown = getattr(self.provider, "shutdown", None)
        if shutdown is not None:
            shutdown()

    # --- in-process spans -------------------------------------------------------------

    @contextmanager
    def span(self, name: str, attributes: Mapping[str, Any]) -> Iterator[Span]:
        """An internal span, current inside the block. An exception marks it failed with
        its type only: exception messages may quote what a client sent."""
        with self.tracer.start_as_current_span(
            name, attributes=attributes, record_exception=False, set_status_on_exception=False
        ) as span:
            try:
                yield span
            except BaseException as exc:
                failed(span, type(exc).__name__)
                raise

    traceparent = staticmethod(traceparent)
    failed = staticmethod(failed)

    @staticmethod
    def current_traceparent() -> str | None:
        """The ``traceparent`` of the span current here, if there is one."""
        return traceparent(trace.get_current_span())

    # --- delivery attempts ------------------------------------------------------------

    def start_attempt(self, delivery: ClaimedDelivery) -> Span:
        """The client span of one attempt, a child of the fan-out that queued it (the
        context stored with the event); a root span if the event has none."""
        parts = urlsplit(delivery.url)
        attributes: dict[str, Any] = {
            "http.request.method": "POST",
            "server.address": parts.hostname or "",
            "url.scheme": parts.scheme,
            "tidings.tenant.id": delivery.tenant_id,
            "tidings.subscription.id": delivery.subscription_id,
            "tidings.event.id": delivery.event_id,
            "tidings.delivery.id": delivery.delivery_id,
            "tidings.delivery.attempt": delivery.attempt,
        }
        port = _port(parts, parts.scheme)
        if port:
            attributes["server.port"] = port
        if delivery.attempt > 1:  # OpenTelemetry's name for a retried request's ordinal
            attributes["http.request.resend_count"] = delivery.attempt - 1
        return self.tracer.start_span(
            "tidings.deliver",
            context=context_of(delivery.trace_context) or otel_context.Context(),
            kind=SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        )

    @staticmethod
    def end_attempt(span: Span, result: AttemptResult, verdict: Verdict | None) -> None:
        if result.status_code is not None:
            span.set_attribute("http.response.status_code", result.status_code)
        span.set_attribute("tidings.delivery.elapsed_ms", result.elapsed_ms)
        if verdict is not None:
            span.set_attribute("tidings.delivery.status", verdict.status.value)
            if verdict.next_attempt_ms is not None:
                span.set_attribute("tidings.delivery.next_attempt_ms", verdict.next_attempt_ms)
        if not result.succeeded:
            kind = result.failure.value if result.failure is not None else None
            failed(span, kind or str(result.status_code))
        else:
            span.set_status(StatusCode.OK)
        span.end()

    # --- API requests -----------------------------------------------------------------

    @property
    def middleware_class(self) -> type[TracedRequests]:
        """The ASGI middleware (``app.add_middleware(cls, tracing=self)``)."""
        return TracedRequests


def _port(parts: SplitResult, scheme: str) -> int | None:
    """The URL's port, or its scheme's; None rather than an error (a span must never
    be what fails a delivery)."""
    try:
        port = parts.port
    except ValueError:
        return None
    return port if port is not None else {"http": 80, "https": 443}.get(scheme)


class TracedRequests:
    """Pure ASGI middleware: a server span per HTTP request, named by its route template
    (never the raw path, which may carry a portal link's token), continuing the caller's
    ``traceparent`` if it sent one."""

    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        self.app = app
        self.tracer = tracing.tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNTRACED_PATHS:
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        carrier = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope["headers"]
            if k in (b"traceparent", b"tracestate")
        }
        parent = PROPAGATOR.extract(carrier) if carrier else otel_context.Context()
        span = self.tracer.start_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.scheme": scope.get("scheme", "http")},
            record_exception=False,
            set_status_on_exception=False,
        )
        status: list[int] = []

        async def send_traced(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            with trace.use_span(span, end_on_exit=False):
                await self.app(scope, receive, send_traced)
        except BaseException as exc:
            failed(span, type(exc).__name__)
            raise
        finally:
            route = getattr(scope.get("route"), "path", None)
            if route:
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
            if status:
                span.set_attribute("http.response.status_code", status[0])
                if status[0] >= 500:
                    failed(span, str(status[0]))
            span.end()
