"""A reference CRM host application built only on tidings' public API.

It is the worked example of embedding tidings: clients, leads, notes, payments,
invoices and agreements live in the same database as tidings, and each of the CRM's
9 actions writes its record and emits its event in one transaction (the transactional
outbox). Mount it with :func:`install` on an app from ``tidings.api.app.create_app``.
"""

from tidings_crm.api import install, router

__all__ = ["install", "router"]
