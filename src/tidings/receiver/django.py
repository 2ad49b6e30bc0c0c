"""Django: a view that verifies a tidings delivery, answers 202 at once, and runs your
function with the parsed Event in a thread pool::

    # urls.py
    from tidings.receiver import SQLiteDedupStore
    from tidings.receiver.django import webhook_view
    from myapp.hooks import on_event  # def on_event(event: Event) -> None

    urlpatterns = [
        path("webhooks/tidings", webhook_view(settings.TIDINGS_SECRET, on_event,
                                               dedup=SQLiteDedupStore("seen.db"))),
    ]

The view is exempt from CSRF (tidings authenticates by signature, not by cookie) and
answers only POST. Database connections your function opens in the pool's threads are
closed after it, as Django does after a request.

Trade-off: the 2xx goes out before your function finishes, so tidings will not retry; if
the process dies in between, that event is lost on your side. Keep the function short and
make it hand the event to a durable queue (a model row, Celery...) as its first step.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from typing import cast

from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from tidings.receiver._handling import Handler, Secrets, default_executor, receive, run_logged
from tidings.receiver.dedup import DedupStore
from tidings.receiver.events import Event
from tidings.receiver.signatures import DEFAULT_TOLERANCE

__all__ = ["webhook_view"]

View = Callable[[HttpRequest], HttpResponse]


def webhook_view(
    secrets: Secrets,
    handler: Handler,
    *,
    dedup: DedupStore | None = None,
    tolerance: int = DEFAULT_TOLERANCE,
    executor: Executor | None = None,
) -> View:
    """A view for ``path(...)``: 401 on a bad signature, 400 on a body that is not an
    envelope, 200 on a duplicate (``dedup``), else 202 with ``handler(event)`` submitted
    to ``executor`` (default: a pool of 8 threads for this view).
    """
    pool = executor or default_executor()

    def tidings_webhook(request: HttpRequest) -> HttpResponse:
        if request.method != "POST":
            return JsonResponse(
                {"error": "method_not_allowed"}, status=405, headers={"Allow": "POST"}
            )
        outcome = receive(secrets, request.headers, request.body, dedup, tolerance)
        if outcome.event is not None:
            pool.submit(_run, handler, outcome.event)
        return JsonResponse(outcome.body, status=outcome.status)

    return cast(View, csrf_exempt(tidings_webhook))


def _run(handler: Handler, event: Event) -> None:
    try:
        run_logged(handler, event)
    finally:
        close_old_connections()
