"""Refuse, before any route runs, input that Python accepts but JSON or PostgreSQL do not.

``json.loads``, which Starlette and FastAPI parse request bodies with, accepts ``NaN``,
``Infinity`` and ``-Infinity``, reads a number too large for a double as infinity, and
keeps a lone surrogate (``"\\ud800"``, or its bytes when the body is not valid UTF-8) as
a string that no UTF-8 encoder can write. Stored, the first two become an envelope that
no receiver can parse and the last fails in the database. PostgreSQL text cannot hold
U+0000 at all, so a NUL in a JSON string, the URL or a header fails there too. Every one
of these is a 400 here, for every route at once.

Most bodies contain none of the bytes that can produce them, so the common path is one
regular-expression scan of the raw body; only a suspicious body is parsed (the way
Starlette parses it, so both see the same document) and walked.
"""

from __future__ import annotations

import email.message
import json
import math
import re
from typing import Any

from starlette.types import Receive, Scope, Send

from tidings.web.errors import ApiError
from tidings.web.limits import HttpMiddleware, read_body, replay

_SUSPICIOUS = re.compile(
    rb"NaN|Infinity"  # the constants Python's json adds to JSON
    rb"|[eE][-+]?[0-9]{3}|[0-9]{200}"  # a number that may overflow a double
    rb"|\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]"  # a surrogate, escaped or encoded
    rb"|\\u0000|\x00"  # NUL; a raw NUL also marks UTF-16 or UTF-32 text
)
"""Bytes without which a body cannot hold anything ``refusal`` refuses.

Overflow needs an exponent of three digits, or (with a two-digit exponent) at least 210
integer digits. Every UTF-16 or UTF-32 JSON text, which ``json.loads`` detects and
decodes, has NUL bytes, since its structural characters are ASCII.
"""
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

NOT_FINITE = "is not a finite number (NaN, Infinity, or too large for a double)"
UNSTORABLE = "contains a NUL character or a lone surrogate (half a UTF-16 pair)"


def parsed_as_json(content_type: bytes | None) -> bool:
    """FastAPI's own test of whether it parses a body as JSON (``application/json`` or
    ``application/*+json``, read as ``email.message`` reads a header; no type at all is
    not JSON, its ``strict_content_type``): whoever must agree with it uses this."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type.decode("latin-1")
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def is_json(content_type: bytes | None) -> bool:
    """Whether a body with this Content-Type may be parsed as JSON by some route: what
    FastAPI parses, and no type at all (other FastAPI versions parse it) — a guard checks
    more, never less."""
    return content_type is None or parsed_as_json(content_type)


def _problem(document: Any) -> tuple[str, str] | None:
    """The path to the first value or key JSON or storage cannot take, and why."""
    stack: list[tuple[str, Any]] = [("body", document)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            return path, NOT_FINITE
        if isinstance(node, str) and _UNSTORABLE.search(node):
            return path, UNSTORABLE
        if isinstance(node, dict):
            for key, value in node.items():
                if _UNSTORABLE.search(key):
                    return path, f"has a key that {UNSTORABLE}"
                stack.append((f"{path}.{key}", value))
        elif isinstance(node, list):
            stack.extend((f"{path}.{index}", value) for index, value in enumerate(node))
    return None


def refusal(body: bytes) -> tuple[str, str] | None:
    """Where and why a JSON ``body`` is refused, or None if it is fine (or not JSON at all,
    which the route's own parsing reports)."""
    if not _SUSPICIOUS.search(body):
        return None
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return _problem(document)


def _nul_in_request_line_or_headers(scope: Scope) -> str | None:
    if "\x00" in scope.get("path", ""):
        return "path"
    query: bytes = scope.get("query_string", b"")
    if b"%00" in query or b"\x00" in query:
        return "query"
    for name, value in scope.get("headers", []):
        if b"\x00" in name or b"\x00" in value:
            return f"header.{name.decode('latin-1')}"
    return None


def _content_type(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            return bytes(value)
    return None


class StrictInput(HttpMiddleware):
    """Pure ASGI middleware: a 400 in the API's error shape for a NUL in the URL or a
    header, and for a JSON body ``refusal`` refuses; everything else passes untouched."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        field = _nul_in_request_line_or_headers(scope)
        if field is not None:
            message = "a NUL character is not allowed in the URL or headers"
            details = [{"field": field, "message": "contains a NUL character"}]
            await ApiError(400, "bad_request", message, details).response()(scope, receive, send)
            return
        if not is_json(_content_type(scope)):
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        if body is None:
            return
        problem = refusal(body)
        if problem is not None:
            path, reason = problem
            message = f"request body is not valid JSON: {path} {reason}"
            details = [{"field": path, "message": reason}]
            await ApiError(400, "invalid_json", message, details).response()(scope, receive, send)
            return
        await self.app(scope, replay(body, receive), send)
