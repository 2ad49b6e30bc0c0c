"""What every framework adapter does with a request, apart from the framework itself.

verify -> parse -> drop a duplicate -> answer; the adapter then runs the user's handler
in the background, after (Starlette) or beside (threads) the 2xx answer, so a slow
handler never makes tidings time out and retry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

from tidings.receiver.dedup import DedupStore
from tidings.receiver.events import Event, InvalidEvent
from tidings.receiver.signatures import WebhookVerificationError, verify

logger = logging.getLogger("tidings.receiver")

Handler = Callable[[Event], object]
"""The user's function; its return value is ignored."""

Secrets = str | Sequence[str]

DEFAULT_WORKERS = 8


@dataclass(frozen=True, slots=True)
class Handled:
    """The answer to send, and the event to hand over (None when there is nothing to do)."""

    status: int
    body: dict[str, str]
    event: Event | None = None


def receive(
    secrets: Secrets,
    headers: Mapping[str, str],
    raw_body: bytes,
    dedup: DedupStore | None,
    tolerance: int,
) -> Handled:
    """Decide the answer. Failures answer 4xx, which tidings retries; duplicates answer 200."""
    try:
        verify(secrets, headers, raw_body, tolerance)
    except WebhookVerificationError as exc:
        return Handled(401, {"error": "invalid_signature", "detail": str(exc)})
    try:
        event = Event.from_json(raw_body)
    except InvalidEvent as exc:
        return Handled(400, {"error": "invalid_event", "detail": str(exc)})
    if dedup is not None and dedup.seen_before(event.id):
        return Handled(200, {"status": "duplicate", "id": event.id})
    return Handled(202, {"status": "accepted", "id": event.id}, event)


def run_logged(handler: Handler, event: Event) -> None:
    """Call the handler; log (never raise) its failure, as nobody is waiting for it."""
    try:
        handler(event)
    except Exception:
        logger.exception("webhook handler failed for event %s (%s)", event.id, event.type)


def default_executor() -> Executor:
    """A bounded pool per endpoint; its threads finish queued events at interpreter exit."""
    return ThreadPoolExecutor(max_workers=DEFAULT_WORKERS, thread_name_prefix="tidings-webhook")
