"""Flask: an endpoint that verifies a tidings delivery, answers 202 at once, and runs your
function with the parsed Event in a thread pool (inside an app context)::

    from tidings.receiver import Event, SQLiteDedupStore
    from tidings.receiver.flask import webhook_blueprint

    def on_event(event: Event) -> None:
        jobs.enqueue("handle_event", event.id, event.type, event.payload)  # durable queue

    dedup = SQLiteDedupStore("seen.db")
    app.register_blueprint(webhook_blueprint(SECRET, on_event, rule="/hooks", dedup=dedup))

Trade-off: the 2xx goes out before your function finishes, so tidings will not retry; if
the process dies in between, that event is lost on your side. Keep the function short and
make it hand the event to a durable queue (database row, Celery, RQ...) as its first step.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor

from flask import Blueprint, Flask, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from tidings.receiver._handling import Handler, Secrets, default_executor, receive, run_logged
from tidings.receiver.dedup import DedupStore
from tidings.receiver.events import Event
from tidings.receiver.signatures import DEFAULT_TOLERANCE

__all__ = ["webhook_blueprint", "webhook_view"]


def webhook_view(
    secrets: Secrets,
    handler: Handler,
    *,
    dedup: DedupStore | None = None,
    tolerance: int = DEFAULT_TOLERANCE,
    executor: Executor | None = None,
) -> Callable[[], ResponseReturnValue]:
    """A view function; register it with ``methods=["POST"]``.

    401 on a bad signature, 400 on a body that is not an envelope, 200 on a duplicate
    (``dedup``), else 202 with ``handler(event)`` submitted to ``executor`` (default: a
    pool of 8 threads for this view).
    """
    pool = executor or default_executor()

    def tidings_webhook() -> ResponseReturnValue:
        headers = dict(request.headers.items())
        outcome = receive(secrets, headers, request.get_data(), dedup, tolerance)
        if outcome.event is not None:
            app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
            pool.submit(_in_app_context, app, handler, outcome.event)
        return jsonify(outcome.body), outcome.status

    return tidings_webhook


def webhook_blueprint(
    secrets: Secrets,
    handler: Handler,
    *,
    dedup: DedupStore | None = None,
    tolerance: int = DEFAULT_TOLERANCE,
    executor: Executor | None = None,
    rule: str = "/webhooks/tidings",
    name: str = "tidings_webhooks",
) -> Blueprint:
    """A Blueprint answering POST at ``rule``.

    The rule is the full path, without a trailing slash: Flask would answer the slash-less
    URL with a redirect, and tidings never follows redirects.
    """
    blueprint = Blueprint(name, __name__)
    view = webhook_view(secrets, handler, dedup=dedup, tolerance=tolerance, executor=executor)
    blueprint.add_url_rule(rule, view_func=view, methods=["POST"])
    return blueprint


def _in_app_context(app: Flask, handler: Handler, event: Event) -> None:
    with app.app_context():
        run_logged(handler, event)
