"""Starlette and FastAPI: an endpoint that verifies a tidings delivery, answers 202 at once,
and runs your function with the parsed Event as a background task after the response::

    from tidings.receiver import Event, SQLiteDedupStore
    from tidings.receiver.starlette import webhook_endpoint, webhook_route

    async def on_event(event: Event) -> None:  # a plain def runs in the thread pool
        await jobs.enqueue("handle_event", event.id, event.type, event.payload)

    app = Starlette(routes=[webhook_route("/webhooks/tidings", SECRET, on_event)])
    # FastAPI: app.add_route("/webhooks/tidings", webhook_endpoint(SECRET, on_event),
    #                        methods=["POST"])

Trade-off: the 2xx goes out before your function finishes, so tidings will not retry; if
the process dies in between, that event is lost on your side. Keep the function short and
make it hand the event to a durable queue as its first step.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import cast

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tidings.receiver._handling import Handler, Secrets, logger, receive, run_logged
from tidings.receiver.dedup import DedupStore
from tidings.receiver.events import Event
from tidings.receiver.signatures import DEFAULT_TOLERANCE

__all__ = ["webhook_endpoint", "webhook_route"]

Endpoint = Callable[[Request], Awaitable[Response]]


def webhook_endpoint(
    secrets: Secrets,
    handler: Handler,
    *,
    dedup: DedupStore | None = None,
    tolerance: int = DEFAULT_TOLERANCE,
) -> Endpoint:
    """An endpoint for POST: 401 on a bad signature, 400 on a body that is not an
    envelope, 200 on a duplicate (``dedup``), else 202 and ``handler(event)`` afterwards.

    ``handler`` may be ``async def`` (awaited) or a plain function (run in a thread).
    """
    run = _background(handler)

    async def tidings_webhook(request: Request) -> Response:
        body = await request.body()
        # In a thread: a SQLite or Redis dedup store does blocking I/O.
        outcome = await run_in_threadpool(receive, secrets, request.headers, body, dedup, tolerance)
        task = None if outcome.event is None else BackgroundTask(run, outcome.event)
        return JSONResponse(outcome.body, outcome.status, background=task)

    return tidings_webhook


def webhook_route(
    path: str,
    secrets: Secrets,
    handler: Handler,
    *,
    dedup: DedupStore | None = None,
    tolerance: int = DEFAULT_TOLERANCE,
    name: str = "tidings_webhook",
) -> Route:
    """A POST-only Route for ``Starlette(routes=[...])`` or ``app.router.routes``."""
    endpoint = webhook_endpoint(secrets, handler, dedup=dedup, tolerance=tolerance)
    return Route(path, endpoint, methods=["POST"], name=name)


def _background(handler: Handler) -> Callable[[Event], Awaitable[None]]:
    if _is_async(handler):

        async def run_async(event: Event) -> None:
            try:
                await cast(Awaitable[object], handler(event))
            except Exception:
                logger.exception("webhook handler failed for event %s (%s)", event.id, event.type)

        return run_async

    async def run_sync(event: Event) -> None:
        await run_in_threadpool(run_logged, handler, event)

    return run_sync


def _is_async(handler: object) -> bool:
    while isinstance(handler, functools.partial):
        handler = handler.func
    call = getattr(handler, "__call__", None)  # noqa: B004 - callable objects too
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)
