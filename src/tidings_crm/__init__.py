"""A reference CRM host application built only on tidings' public API (``tidings``).

It is the worked example of an app (see ``tidings.apps``): clients, leads, notes,
payments, invoices and agreements live in the same database as tidings, and each of the
CRM's 9 actions writes its record and emits its event in one transaction (the
transactional outbox). tidings finds it through the entry point ``tidings.apps`` named
``crm`` (see pyproject.toml); ``TIDINGS_APPS=""`` serves tidings without it.
"""

from tidings import App
from tidings_crm.api import create_tables, router
from tidings_crm.event_types import EVENT_TYPES

app = App(name="crm", event_types=EVENT_TYPES, routers=[router], on_startup=create_tables)

__all__ = ["app"]
