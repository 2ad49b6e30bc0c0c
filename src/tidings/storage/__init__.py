"""Storage: small interfaces (``interfaces.py``) over SQLite and PostgreSQL connectors."""

from tidings.storage.factory import open_store
from tidings.storage.interfaces import (
    AppTransactions,
    DeliveryQueue,
    EventStore,
    KeyStore,
    Outbox,
    Reports,
    Retention,
    Store,
    SubscriptionStore,
)
from tidings.storage.records import (
    ApiKey,
    AttemptOutcome,
    AttemptRecord,
    ClaimedDelivery,
    DeliveryRecord,
    EventFilter,
    EventSummary,
    Page,
    StoredEvent,
    SubscriptionHealth,
    Tenant,
)

__all__ = [
    "ApiKey",
    "AppTransactions",
    "AttemptOutcome",
    "AttemptRecord",
    "ClaimedDelivery",
    "DeliveryQueue",
    "DeliveryRecord",
    "EventFilter",
    "EventStore",
    "EventSummary",
    "KeyStore",
    "Outbox",
    "Page",
    "Reports",
    "Retention",
    "Store",
    "StoredEvent",
    "SubscriptionHealth",
    "SubscriptionStore",
    "Tenant",
    "open_store",
]
