"""The client's resources: one table serving both ``Client`` and ``AsyncClient``.

Each resource method is a descriptor over a ``_calls`` builder. The resource's client
does the only two things that differ between blocking and asyncio: send one call
(``_call``), and walk a listing page by page (``_walk``). The overloads of ``__get__``
give mypy the method's type for each kind of client: a blocking client's
``events.get(id)`` returns an ``Event``, an asyncio client's returns a coroutine of one.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Generic, ParamSpec, Protocol, Self, TypeVar, overload

import httpx

from tidings.client import _calls as calls
from tidings.client._calls import Call, Pages, Target

P = ParamSpec("P")
T = TypeVar("T")
Sender = TypeVar("Sender", covariant=True)
Http = TypeVar("Http", bound=httpx.Client | httpx.AsyncClient)
Transport = TypeVar("Transport", bound=httpx.BaseTransport | httpx.AsyncBaseTransport)


class Blocking(Protocol):
    def _call(self, builder: Callable[P, Call[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Send the call ``builder`` makes and return its parsed answer."""
        ...

    def _walk(
        self, pages: Callable[P, Pages[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Iterator[T]:
        """Every item of a listing, one request per page."""
        ...


class Awaiting(Protocol):
    async def _call(
        self, builder: Callable[P, Call[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T: ...

    def _walk(
        self, pages: Callable[P, Pages[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> AsyncIterator[T]: ...


class Resource(Generic[Sender]):
    def __init__(self, client: Sender) -> None:
        self._client = client


class Send(Generic[P, T]):
    """A resource method that sends the call ``builder`` makes and returns its answer."""

    def __init__(self, builder: Callable[P, Call[T]]) -> None:
        self._builder = builder
        self.__doc__ = builder.__doc__

    @overload
    def __get__(self, resource: None, owner: type[Any]) -> Self: ...
    @overload
    def __get__(self, resource: Resource[Blocking], owner: type[Any]) -> Callable[P, T]: ...
    @overload
    def __get__(
        self, resource: Resource[Awaiting], owner: type[Any]
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...
    def __get__(self, resource: Resource[Any] | None, owner: type[Any]) -> Any:
        if resource is None:
            return self
        return bound(resource._client._call, self._builder)


class Walk(Generic[P, T]):
    """A resource method yielding every item of a listing, one request per page."""

    def __init__(self, pages: Callable[P, Pages[T]]) -> None:
        self._pages = pages
        self.__doc__ = pages.__doc__

    @overload
    def __get__(self, resource: None, owner: type[Any]) -> Self: ...
    @overload
    def __get__(
        self, resource: Resource[Blocking], owner: type[Any]
    ) -> Callable[P, Iterator[T]]: ...
    @overload
    def __get__(
        self, resource: Resource[Awaiting], owner: type[Any]
    ) -> Callable[P, AsyncIterator[T]]: ...
    def __get__(self, resource: Resource[Any] | None, owner: type[Any]) -> Any:
        if resource is None:
            return self
        return bound(resource._client._walk, self._pages)


def bound(run: Callable[..., Any], builder: Callable[..., Any]) -> Callable[..., Any]:
    """``run(builder, ...)`` with the builder's name and docs, as the resource's method."""
    return functools.update_wrapper(functools.partial(run, builder), builder)


class Events(Resource[Sender]):
    emit = Send(calls.emit_event)
    get = Send(calls.get_event)
    list = Send(calls.list_events)
    iter = Walk(calls.event_pages)
    deliveries = Send(calls.event_deliveries)
    redeliver = Send(calls.redeliver_event)


class Subscriptions(Resource[Sender]):
    create = Send(calls.create_subscription)
    get = Send(calls.get_subscription)
    list = Send(calls.list_subscriptions)
    iter = Walk(calls.subscription_pages)
    update = Send(calls.update_subscription)
    delete = Send(calls.delete_subscription)
    test = Send(calls.test_subscription)
    rotate_secret = Send(calls.rotate_secret)
    end_rotation = Send(calls.end_rotation)
    verify = Send(calls.verify_subscription)
    deliveries = Send(calls.subscription_deliveries)
    iter_deliveries = Walk(calls.delivery_pages)


class Transformations(Resource[Sender]):
    test = Send(calls.test_transformation)


class Filters(Resource[Sender]):
    test = Send(calls.test_filter)


class EventTypes(Resource[Sender]):
    list = Send(calls.list_event_types)
    get = Send(calls.get_event_type)


class Hooks(Resource[Sender]):
    subscribe = Send(calls.subscribe_hook)
    unsubscribe = Send(calls.unsubscribe_hook)
    samples = Send(calls.hook_samples)


class Resources(Generic[Http, Transport]):
    """What ``Client`` and ``AsyncClient`` share: the constructor, where their calls go, and
    the resources, each a view of the client (``client.events.get(...)`` sends through it).
    Each client says only how to make its own httpx client (``_new_http``)."""

    events: Events[Self]
    subscriptions: Subscriptions[Self]
    event_types: EventTypes[Self]
    hooks: Hooks[Self]
    transformations: Transformations[Self]
    filters: Filters[Self]

    def __init__(
        self: Self,
        base_url: str,
        api_key: str,
        timeout: float = 10,
        *,
        transport: Transport | None = None,
        http_client: Http | None = None,
    ) -> None:
        self._http = http_client or self._new_http(timeout, transport)
        self._owns_http = http_client is None
        self._target = Target.of(base_url, api_key)
        self.events = Events(self)
        self.subscriptions = Subscriptions(self)
        self.event_types = EventTypes(self)
        self.hooks = Hooks(self)
        self.transformations = Transformations(self)
        self.filters = Filters(self)

    def _new_http(self, timeout: float, transport: Transport | None) -> Http:
        raise NotImplementedError
