"""The CRM's own tables (SQLAlchemy Core), kept apart from tidings' schema.

Every table is prefixed ``crm_`` and scoped by ``tenant_id``. Timestamps are epoch
milliseconds, calendar dates ISO strings and money integer minor units plus a currency,
so that the same tables work on SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.sql.schema import SchemaItem

metadata = MetaData()


def _id() -> Column[str]:
    return Column("id", String(40), primary_key=True)


def _tenant() -> Column[str]:
    return Column("tenant_id", String(64), nullable=False)


def _records(name: str, *items: SchemaItem) -> Table:
    """A table of tenant-scoped records, each with its own ``id``."""
    return Table(name, metadata, _id(), _tenant(), *items)


def _person() -> list[Column[Any]]:
    """The contact columns a client and a lead both start with."""
    return [
        Column("first_name", String(200), nullable=False),
        Column("last_name", String(200), nullable=False),
        Column("company_name", String(200)),
        Column("email", String(320)),
        Column("phone", String(20)),
    ]


clients = _records(
    "crm_clients",
    *_person(),
    Column("status", String(20), nullable=False),
    Column("address", JSON),
    Column("tags", JSON, nullable=False),
    Column("owner_id", String(40)),
    Column("lead_id", String(40)),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    UniqueConstraint("tenant_id", "email", name="uq_crm_clients_email"),
    Index("ix_crm_clients_phone", "tenant_id", "phone"),
)

leads = _records(
    "crm_leads",
    *_person(),
    Column("source", String(100)),
    Column("status", String(40), nullable=False),
    Column("estimated_amount", BigInteger),
    Column("estimated_currency", String(3)),
    Column("assigned_to", String(40)),
    Column("notes", Text),
    Column("client_id", String(40)),
    Column("created_ms", BigInteger, nullable=False),
    Column("converted_ms", BigInteger),
    Index("ix_crm_leads_email", "tenant_id", "email"),
)

notes = _records(
    "crm_notes",
    Column("subject_type", String(10), nullable=False),
    Column("subject_id", String(40), nullable=False),
    Column("title", String(200)),
    Column("body", Text, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)

invoices = _records(
    "crm_invoices",
    Column("invoice_number", String(40), nullable=False),
    Column("client_id", String(40), nullable=False),
    Column("status", String(10), nullable=False),
    Column("issue_date", String(10), nullable=False),
    Column("due_date", String(10), nullable=False),
    Column("line_items", JSON, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("subtotal", BigInteger, nullable=False),
    Column("tax", BigInteger, nullable=False),
    Column("total", BigInteger, nullable=False),
    Column("memo", Text),
    Column("created_ms", BigInteger, nullable=False),
    UniqueConstraint("tenant_id", "invoice_number", name="uq_crm_invoices_number"),
)

payments = _records(
    "crm_payments",
    Column("client_id", String(40), nullable=False),
    Column("invoice_id", String(40)),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("method", String(20), nullable=False),
    Column("processor_reference", String(200)),
    Column("card_last4", String(4)),
    Column("paid_ms", BigInteger, nullable=False),
)

agreements = _records(
    "crm_agreements",
    Column("client_id", String(40), nullable=False),
    Column("title", String(200)),
    Column("signer_name", String(200), nullable=False),
    Column("signer_email", String(320)),
    Column("signer_ip", String(45)),
    Column("effective_date", String(10)),
    Column("document_url", String(2000)),
    Column("signed_ms", BigInteger, nullable=False),
)

idempotency_keys = Table(
    "crm_idempotency_keys",
    metadata,
    _tenant(),
    Column("key", String(255), nullable=False),
    Column("action", String(40), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("response", JSON, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("tenant_id", "key", name="pk_crm_idempotency_keys"),
)
"""One row per Idempotency-Key: the action it was used for, a hash of the request and
the record returned, so a retry returns the same answer without writing or emitting."""

__all__ = [
    "agreements",
    "clients",
    "idempotency_keys",
    "invoices",
    "leads",
    "metadata",
    "notes",
    "payments",
]
