"""A typed Python client for the tidings HTTP API (needs ``httpx``).

```python
from tidings.client import Client

with Client("http://127.0.0.1:8000", api_key) as client:
    event = client.events.emit("client.created", {"clientId": "cli_42"}, idempotency_key="k1")
    for seen in client.events.iter(type="client.created"):
        ...
```

``AsyncClient`` has the same resources and methods, awaited (``async for`` to iterate).
Every non-2xx answer raises ``TidingsError`` (``NotFound``, ``Unauthorized``,
``RateLimited`` with ``retry_after``); nothing is retried for you.
"""

from tidings.client._async import AsyncClient
from tidings.client._calls import SubscriptionChanges
from tidings.client._sync import Client
from tidings.client.errors import NotFound, RateLimited, TidingsError, Unauthorized
from tidings.client.models import (
    Attempt,
    CreatedSubscription,
    Event,
    EventType,
    Page,
    Redelivery,
    Subscription,
    TestResult,
    TransformationResult,
)

__all__ = [
    "AsyncClient",
    "Attempt",
    "Client",
    "CreatedSubscription",
    "Event",
    "EventType",
    "NotFound",
    "Page",
    "RateLimited",
    "Redelivery",
    "Subscription",
    "SubscriptionChanges",
    "TestResult",
    "TidingsError",
    "TransformationResult",
    "Unauthorized",
]
