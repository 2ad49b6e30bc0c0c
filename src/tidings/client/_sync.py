"""The blocking client: ``Client(base_url, api_key)``; the calls come from ``_calls``."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Concatenate, ParamSpec, Self, TypeVar

import httpx

from tidings.client import _calls as calls
from tidings.client._calls import Call, Pages, Target, finish

P = ParamSpec("P")
T = TypeVar("T")


class Resource:
    def __init__(self, client: Client) -> None:
        self._client = client


def send(builder: Callable[P, Call[T]]) -> Callable[Concatenate[Resource, P], T]:
    """A resource method that sends the call ``builder`` makes and returns its answer."""

    @functools.wraps(builder)
    def method(self: Resource, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._client.send(builder(*args, **kwargs))

    return method


def walk(pages: Callable[P, Pages[T]]) -> Callable[Concatenate[Resource, P], Iterator[T]]:
    """A resource method yielding every item of a listing, one request per page."""

    @functools.wraps(pages)
    def method(self: Resource, /, *args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        listing, cursor = pages(*args, **kwargs), None
        while True:
            page = self._client.send(listing.at(cursor))
            yield from page.items
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


class Client:
    """A blocking client for the tidings API; use it as a context manager or ``close()`` it.

    ``transport`` or a whole ``http_client`` may be injected (an injected client is
    neither configured nor closed: ``timeout`` applies only to the one made here).
    Non-2xx answers raise ``TidingsError``; transport failures raise httpx's errors.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        timeout: float = 10,
        *,
        transport: httpx.BaseTransport | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        self._target = Target.of(base_url, api_key)
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(timeout=timeout, transport=transport)
        self.events = Events(self)
        self.subscriptions = Subscriptions(self)
        self.event_types = EventTypes(self)
        self.hooks = Hooks(self)

    def send(self, call: Call[T]) -> T:
        """Send one call and parse its answer (the resources' methods all come here)."""
        return finish(call, self._http.send(self._target.request(self._http, call)))

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
