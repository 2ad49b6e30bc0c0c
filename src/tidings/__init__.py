"""tidings: durable, signed webhook and event delivery.

The names in ``__all__`` are the embedding API: what an app (see :mod:`tidings.apps`) or a
program that embeds tidings may use. Everything else is internal and may change in any
release; ``tests/unit/test_public_api.py`` keeps the list honest.

They are imported on first use, so ``import tidings.receiver`` (on the receiving end) or
``import tidings.client`` does not load the server: FastAPI, SQLAlchemy, the dispatcher.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from tidings.api.auth import get_tidings, require
    from tidings.app import create_app
    from tidings.apps import App
    from tidings.config import Settings
    from tidings.domain.catalog import EventType, event_type
    from tidings.domain.ids import new_id
    from tidings.service import Tidings
    from tidings.storage import ApiKey, Outbox, StoredEvent
    from tidings.web.errors import ApiError, not_found

_HOMES = {
    "ApiError": "tidings.web.errors",
    "ApiKey": "tidings.storage",
    "App": "tidings.apps",
    "EventType": "tidings.domain.catalog",
    "Outbox": "tidings.storage",
    "Settings": "tidings.config",
    "StoredEvent": "tidings.storage",
    "Tidings": "tidings.service",
    "create_app": "tidings.app",
    "event_type": "tidings.domain.catalog",
    "get_tidings": "tidings.api.auth",
    "new_id": "tidings.domain.ids",
    "not_found": "tidings.web.errors",
    "require": "tidings.api.auth",
}

__all__ = [
    "ApiError",
    "ApiKey",
    "App",
    "EventType",
    "Outbox",
    "Settings",
    "StoredEvent",
    "Tidings",
    "__version__",
    "create_app",
    "event_type",
    "get_tidings",
    "new_id",
    "not_found",
    "require",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'tidings' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
