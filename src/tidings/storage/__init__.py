"""Storage: one interface (``Store``), with SQLite and PostgreSQL connectors."""

from tidings.storage.base import (
    ApiKey,
    AttemptRecord,
    ClaimedDelivery,
    DeliveryRecord,
    EventFilter,
    EventSummary,
    Outbox,
    Outcome,
    Page,
    Store,
    StoredEvent,
    SubscriptionHealth,
    Tenant,
)
from tidings.storage.factory import open_store

__all__ = [
    "ApiKey",
    "AttemptRecord",
    "ClaimedDelivery",
    "DeliveryRecord",
    "EventFilter",
    "EventSummary",
    "Outbox",
    "Outcome",
    "Page",
    "Store",
    "StoredEvent",
    "SubscriptionHealth",
    "Tenant",
    "open_store",
]
