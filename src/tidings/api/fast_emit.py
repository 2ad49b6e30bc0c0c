"""The emit endpoint's fast path: a well-formed ``POST /api/v1/events`` skips FastAPI.

Why: emitting is the one request a SaaS product makes for every business event, and
FastAPI's per-request work (route matching across included routers, solving the key's
dependencies, validating through its field machinery) cost more CPU than storing the
event itself (``bench/api_cost.py`` prints both). This pure ASGI middleware sits inside
the input checks (size limit, strict JSON) and answers the common case itself: JSON body,
no query string, a key that is valid, allowed and not throttled, a body that validates.

Anything else it hands, untouched, to the FastAPI route, so every refusal of the body or
a header (422, a malformed header, a query string) is FastAPI's answer by construction,
not a copy of it. It answers two refusals itself, once the body has validated: the key's
401/403, which the route would answer with the very same ``ApiError``, and the 503 of a
database outage (:func:`~tidings.web.errors.error_response`, as the app's handlers do).
It decides before its first side effect (the key's rate-limit token), so a request it
hands over is handled exactly once. What it runs is the route's own code:
:func:`~tidings.api.auth.authorize`, :class:`~tidings.api.schemas.EmitEvent`,
:meth:`Tidings.emit <tidings.service.Tidings.emit>` and
:func:`~tidings.api.routes_events.emitted_response`. It decides "is this JSON" with
FastAPI's own test (:func:`~tidings.web.strict_input.parsed_as_json`, on the first
Content-Type). One difference stays: FastAPI's built-in OpenTelemetry support (on when a
global provider is set) names a fast-path request's span without its route; tidings'
own tracing names it (``scope["route"]``).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tidings.api.auth import authorize
from tidings.api.routes_events import (
    EMIT_PATH,
    IDEMPOTENCY_KEY_LIMIT,
    emit_route,
    emitted_response,
)
from tidings.api.schemas import EmitEvent
from tidings.service import Tidings
from tidings.web.errors import ANSWERED, ApiError, error_response
from tidings.web.limits import HttpMiddleware, read_body, replay
from tidings.web.strict_input import parsed_as_json


class FastEmit(HttpMiddleware):
    """Pure ASGI middleware; ``handled`` counts the emits it answered itself."""

    def __init__(self, app: ASGIApp, tidings: Tidings) -> None:
        super().__init__(app)
        self.tidings = tidings
        self.handled = 0
        self._route = emit_route()

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = _plain_emit_headers(scope)
        if headers is None:
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        if body is None:
            return  # the client went away
        scope["route"] = self._route  # what tracing names the span by, a 500's too
        response = await self._answer(body, headers)
        if response is None:
            del scope["route"]  # the router sets its own
            await self.app(scope, replay(body, receive), send)
            return
        await response(scope, _no_receive, send)

    async def _answer(self, body: bytes, headers: dict[bytes, str]) -> Response | None:
        """Emit and answer, or None (nothing done) to let FastAPI answer."""
        request = _valid_request(body)
        plaintext = headers.get(b"x-api-key")
        if request is None or not plaintext:
            return None
        try:
            key = await authorize(self.tidings, plaintext, "events:write")
        except ApiError as exc:  # with a valid body and no query, the route's very answer
            return exc.response()
        except ANSWERED as exc:  # the key's lookup met an outage: the route's 503
            return error_response(exc, EMIT_PATH)
        if self.tidings.throttle(key) is not None:
            return None
        try:
            event, created = await self.tidings.emit(
                key.tenant_id,
                request.type,
                request.payload,
                request.metadata,
                headers.get(b"idempotency-key"),
                request.ordering_key,
            )
        except ANSWERED as exc:
            return error_response(exc, EMIT_PATH)
        self.handled += 1
        return emitted_response(event, created)


def _plain_emit_headers(scope: Scope) -> dict[bytes, str] | None:
    """The headers the fast path reads, if this is an emit it may take: the method and
    path, no query string, a JSON body, each header it reads present at most once and an
    ``Idempotency-Key`` within the route's limits (an empty or longer one: FastAPI's 422).
    None otherwise."""
    if scope["method"] != "POST" or _route_path(scope) != EMIT_PATH or scope.get("query_string"):
        return None
    wanted: dict[bytes, str] = {}
    content_type = None
    for name, value in scope["headers"]:
        if name == b"content-type":
            if content_type is None:  # the first, as FastAPI and StrictInput read it
                content_type = value
        elif name in (b"x-api-key", b"idempotency-key"):
            if name in wanted:
                return None
            wanted[name] = value.decode("latin-1")
    if not parsed_as_json(content_type):
        return None
    key = wanted.get(b"idempotency-key")
    if key is not None and not 0 < len(key) <= IDEMPOTENCY_KEY_LIMIT:
        return None
    return wanted


def _route_path(scope: Scope) -> str:
    """The path as the router matches it: below ``root_path`` when mounted under one."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root + "/"):
        return path[len(root) :]
    return path


def _valid_request(body: bytes) -> EmitEvent | None:
    try:
        document: Any = json.loads(body)
        return EmitEvent.model_validate(document) if isinstance(document, dict) else None
    except (ValueError, ValidationError, RecursionError):  # FastAPI answers these
        return None


async def _no_receive() -> dict[str, Any]:
    return {"type": "http.disconnect"}
