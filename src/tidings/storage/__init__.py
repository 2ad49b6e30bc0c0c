"""Storage: one interface (``Store``), with SQLite and PostgreSQL connectors."""

from tidings.storage.base import (
    ApiKey,
    AttemptRecord,
    ClaimedDelivery,
    Outbox,
    Outcome,
    Page,
    Store,
    StoredEvent,
    Tenant,
)
from tidings.storage.factory import open_store

__all__ = [
    "ApiKey",
    "AttemptRecord",
    "ClaimedDelivery",
    "Outbox",
    "Outcome",
    "Page",
    "Store",
    "StoredEvent",
    "Tenant",
    "open_store",
]
