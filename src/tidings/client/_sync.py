"""The blocking client: ``Client(base_url, api_key)``; the calls come from ``_calls``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import TracebackType
from typing import ParamSpec, Self, TypeVar

import httpx

from tidings.client._calls import Call, Pages, finish
from tidings.client._resources import Resources

P = ParamSpec("P")
T = TypeVar("T")


class Client(Resources[httpx.Client, httpx.BaseTransport]):
    """A blocking client for the tidings API; use it as a context manager or ``close()`` it.

    ``transport`` or a whole ``http_client`` may be injected (an injected client is
    neither configured nor closed: ``timeout`` applies only to the one made here).
    Non-2xx answers raise ``TidingsError``; transport failures raise httpx's errors.
    """

    def _new_http(self, timeout: float, transport: httpx.BaseTransport | None) -> httpx.Client:
        return httpx.Client(timeout=timeout, transport=transport)

    def send(self, call: Call[T]) -> T:
        """Send one call and parse its answer (the resources' methods all come here)."""
        return finish(call, self._http.send(self._target.request(self._http, call)))

    def _call(self, builder: Callable[P, Call[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self.send(builder(*args, **kwargs))

    def _walk(
        self, pages: Callable[P, Pages[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Iterator[T]:
        listing, cursor = pages(*args, **kwargs), None
        while True:
            page = self.send(listing.at(cursor))
            yield from page.items
            if (cursor := page.next_cursor) is None:
                return

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
