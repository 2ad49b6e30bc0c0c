"""The asyncio twin of ``Client``: same resources from ``_resources``, awaited."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import ParamSpec, Self, TypeVar

import httpx

from tidings.client._calls import Call, Pages, finish
from tidings.client._resources import Resources

P = ParamSpec("P")
T = TypeVar("T")


class AsyncClient(Resources[httpx.AsyncClient, httpx.AsyncBaseTransport]):
    """The asyncio client: ``async with AsyncClient(...)``, or ``await aclose()``.

    ``transport`` (e.g. ``httpx.ASGITransport(app)``) or a whole ``http_client`` may be
    injected; an injected client is neither configured nor closed here.
    """

    def _new_http(
        self, timeout: float, transport: httpx.AsyncBaseTransport | None
    ) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=timeout, transport=transport)

    async def send(self, call: Call[T]) -> T:
        """Send one call and parse its answer (the resources' methods all come here)."""
        return finish(call, await self._http.send(self._target.request(self._http, call)))

    async def _call(self, builder: Callable[P, Call[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.send(builder(*args, **kwargs))

    async def _walk(
        self, pages: Callable[P, Pages[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> AsyncIterator[T]:
        listing, cursor = pages(*args, **kwargs), None
        while True:
            page = await self.send(listing.at(cursor))
            for item in page.items:
                yield item
            if (cursor := page.next_cursor) is None:
                return

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
