"""The asyncio twin of ``Client``: same calls from ``_calls``, awaited."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Coroutine
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

import httpx

from tidings.client import _calls as calls
from tidings.client._calls import Call, Pages, Target, finish

P = ParamSpec("P")
T = TypeVar("T")


class Resource:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client


def send(
    builder: Callable[P, Call[T]],
) -> Callable[Concatenate[Resource, P], Coroutine[Any, Any, T]]:
    """A resource coroutine that sends the call ``builder`` makes and returns its answer."""

    @functools.wraps(builder)
    async def method(self: Resource, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._client.send(builder(*args, **kwargs))

    return method


def walk(pages: Callable[P, Pages[T]]) -> Callable[Concatenate[Resource, P], AsyncIterator[T]]:
    """A resource method yielding every item of a listing, one request per page."""

    @functools.wraps(pages)
    async def method(self: Resource, /, *args: P.args, **kwargs: P.kwargs) -> AsyncIterator[T]:
        listing, cursor = pages(*args, **kwargs), None
        while True:
            page = await self._client.send(listing.at(cursor))
            for item in page.items:
                yield item
            if (cursor := page.next_cursor) is None:
                return

    return method


class Events(Resource):
    emit = send(calls.emit_event)
    get = send(calls.get_event)
    list = send(calls.list_events)
    iter = walk(calls.event_pages)
    deliveries = send(calls.event_deliveries)
    redeliver = send(calls.redeliver_event)


class Subscriptions(Resource):
    create = send(calls.create_subscription)
    get = send(calls.get_subscription)
    list = send(calls.list_subscriptions)
    iter = walk(calls.subscription_pages)
    update = send(calls.update_subscription)
    delete = send(calls.delete_subscription)
    test = send(calls.test_subscription)
    rotate_secret = send(calls.rotate_secret)
    verify = send(calls.verify_subscription)
    deliveries = send(calls.subscription_deliveries)
    iter_deliveries = walk(calls.delivery_pages)


class EventTypes(Resource):
    list = send(calls.list_event_types)
    get = send(calls.get_event_type)


class Hooks(Resource):
    subscribe = send(calls.subscribe_hook)
    unsubscribe = send(calls.unsubscribe_hook)
    samples = send(calls.hook_samples)


class AsyncClient:
    """The asyncio client: ``async with AsyncClient(...)``, or ``await aclose()``.

    ``transport`` (e.g. ``httpx.ASGITransport(app)``) or a whole ``http_client`` may be
    injected; an injected client is neither configured nor closed here.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        timeout: float = 10,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._target = Target.of(base_url, api_key)
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=timeout, transport=transport)
        self.events = Events(self)
        self.subscriptions = Subscriptions(self)
        self.event_types = EventTypes(self)
        self.hooks = Hooks(self)

    async def send(self, call: Call[T]) -> T:
        """Send one call and parse its answer (the resources' methods all come here)."""
        return finish(call, await self._http.send(self._target.request(self._http, call)))

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
