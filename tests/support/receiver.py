"""A real HTTP receiver on 127.0.0.1 that records what it gets and answers as scripted."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from tests.support.servers import LocalServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)
    peer: str = ""
    """The address the request's connection came from (a proxy's, through one)."""


Responder = Callable[[int], web.Response | Awaitable[web.Response]]
"""Given the 1-based count of requests seen so far on a path, build the response."""


def ok(_: int) -> web.Response:
    return web.Response(status=200, text="ok")


class Receiver(LocalServer):
    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Received] = []
        self.responders: dict[str, Responder] = {}
        self.streaming: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = {}
        """Paths answered by a raw aiohttp handler (e.g. a streamed response)."""
        self._changed = asyncio.Condition()

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    def on(self, path: str, responder: Responder) -> str:
        self.responders[path] = responder
        return self.url(path)

    def at(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("POST", "/{tail:.*}", self._handle)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        received = Received(request.path, dict(request.headers), body, peer=request.remote or "")
        self.requests.append(received)
        async with self._changed:
            self._changed.notify_all()
        if request.path in self.streaming:
            return await self.streaming[request.path](request)
        response = self.responders.get(request.path, ok)(len(self.at(request.path)))
        if inspect.isawaitable(response):
            response = await response
        return response

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        """Wait until ``predicate()`` holds after some request arrived (or fail on timeout)."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(predicate)

    async def wait_count(self, path: str, count: int, timeout: float = 15.0) -> list[Received]:
        await self.wait_for(lambda: len(self.at(path)) >= count, timeout)
        return self.at(path)
