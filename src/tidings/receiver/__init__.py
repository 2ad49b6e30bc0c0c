"""What a receiver needs: verify a tidings delivery, parse it, and drop duplicates.

Standard library only, so a receiving app can import it without the server's
dependencies. Ready-made endpoints live beside it, one module per framework, each
imported only by users of that framework: ``tidings.receiver.flask``,
``tidings.receiver.starlette`` (FastAPI too) and ``tidings.receiver.django``.
"""

from tidings.receiver.dedup import (
    Deduplicator,
    DedupStore,
    MemoryDedupStore,
    RedisDedupStore,
    SQLiteDedupStore,
)
from tidings.receiver.events import Event, InvalidEvent
from tidings.receiver.signatures import DEFAULT_TOLERANCE, WebhookVerificationError, verify

__all__ = [
    "DEFAULT_TOLERANCE",
    "DedupStore",
    "Deduplicator",
    "Event",
    "InvalidEvent",
    "MemoryDedupStore",
    "RedisDedupStore",
    "SQLiteDedupStore",
    "WebhookVerificationError",
    "verify",
]
