"""Reject oversized request bodies before the app reads any of them."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidings.web.errors import ApiError


class BodyTooLarge(Exception):
    pass


async def read_body(receive: Receive, max_bytes: int | None = None) -> bytes | None:
    """The whole request body, or None if the client went away before sending it.

    Raises BodyTooLarge as soon as more than ``max_bytes`` have arrived, so a chunked
    body is never buffered past the limit.
    """
    chunks: list[bytes] = []
    received = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        received += len(chunk)
        if max_bytes is not None and received > max_bytes:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app ``body`` (already read) in one message, then
    whatever the client sends next (its disconnect)."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class HttpMiddleware:
    """Pure ASGI middleware for HTTP requests: ``handle`` gets each one; every other scope
    (lifespan, websocket) passes to the app untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.handle(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class BodySizeLimit(HttpMiddleware):
    """Pure ASGI middleware: 413 when the body is larger than ``max_bytes``, whether its
    Content-Length says so or it is streamed (chunked) and grows past the limit.

    The body is read here, before the app runs, and passed on whole: inside the app an
    overflow would surface as one more error while parsing the body (FastAPI answers
    those with a 400), after the app may already have answered.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        super().__init__(app)
        self.max_bytes = max_bytes

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = _declared_length(scope)
        try:
            if declared is not None and declared > self.max_bytes:
                raise BodyTooLarge
            body = await read_body(receive, self.max_bytes)
        except BodyTooLarge:
            await self._reject(scope, receive, send)
            return
        if body is not None:
            await self.app(scope, replay(body, receive), send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"request body exceeds {self.max_bytes} bytes"
        await ApiError(413, "payload_too_large", message).response()(scope, receive, send)
