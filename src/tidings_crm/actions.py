"""The CRM's 9 actions and 2 searches, as synchronous functions run inside
``Tidings.transaction``: each action writes its record on ``conn`` and emits its event
through ``outbox`` in the SAME transaction (the transactional outbox), so a failed
write emits nothing and a committed write always emits.

Inputs are validated, camelCase mappings (see :mod:`tidings_crm.api`); outputs are
camelCase records shaped like the matching catalog payloads. An action given an
``idempotency_key`` it has already seen returns the stored record without writing or
emitting again.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, Table, func, insert, or_, select, update

from tidings import Outbox, Tidings, new_id
from tidings_crm.schema import (
    agreements,
    clients,
    idempotency_keys,
    invoices,
    leads,
    notes,
    payments,
)

Data = Mapping[str, Any]
Record = dict[str, Any]
SEARCH_LIMIT = 100


class NotFound(Exception):
    """An id that is unknown in (or foreign to) the caller's tenant."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found")
        self.what = what


class Conflict(Exception):
    """The action is not valid in the record's current state."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ActionResult:
    record: Record
    replayed: bool = False
    """True when an Idempotency-Key replay returned the stored record."""


@dataclass(frozen=True)
class _Tx:
    conn: Connection
    outbox: Outbox
    tidings: Tidings
    tenant_id: str

    def emit(self, event_type: str, payload: Record) -> None:
        self.outbox.add(self.tidings.draft_event(self.tenant_id, event_type, payload))

    def insert(self, table: Table, **values: Any) -> None:
        """Write one row of the caller's tenant."""
        self.conn.execute(insert(table).values(tenant_id=self.tenant_id, **values))

    def store(self, table: Table, event_type: str, record: Record, **values: Any) -> Record:
        """Write one row of the caller's tenant and emit ``event_type`` with ``record``, in
        the same transaction; returns ``record``."""
        self.insert(table, **values)
        self.emit(event_type, record)
        return record

    def find(self, table: Table, record_id: str, what: str) -> Mapping[Any, Any]:
        row = self.conn.execute(
            select(table).where(table.c.id == record_id, table.c.tenant_id == self.tenant_id)
        ).first()
        if row is None:
            raise NotFound(what)
        return row._mapping


Action = Callable[[_Tx, Data], Record]


# --- helpers ------------------------------------------------------------------------


def _now_ms() -> int:
    return int(time.time() * 1000)


def _utc(ms: int | None) -> str | None:
    if ms is None:
        return None
    stamp = datetime.fromtimestamp(ms / 1000, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _money(amount: int | None, currency: str | None) -> Record | None:
    if amount is None or currency is None:
        return None
    return {"amount": amount, "currency": currency}


def _email(value: Any) -> str | None:
    return value.strip().lower() if isinstance(value, str) else None


def _columns(record: Record, *fields: str) -> dict[str, Any]:
    """These fields of a record under their column names: ``clientId`` is ``client_id``."""
    return {_COLUMN_BREAK.sub("_", field).lower(): record[field] for field in fields}


_COLUMN_BREAK = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def _request_hash(action: str, data: Data) -> str:
    text = json.dumps([action, data], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _run(tx: _Tx, action: Action, data: Data, key: str | None, name: str) -> ActionResult:
    """Run ``action`` once per Idempotency-Key: a repeat returns the stored record."""
    if key is None:
        return ActionResult(action(tx, data))
    digest = _request_hash(name, data)
    stored = tx.conn.execute(
        select(idempotency_keys).where(
            idempotency_keys.c.tenant_id == tx.tenant_id, idempotency_keys.c.key == key
        )
    ).first()
    if stored is not None:
        if stored.action != name or stored.request_hash != digest:
            raise Conflict(
                "idempotency_conflict", "this Idempotency-Key was used for a different request"
            )
        return ActionResult(dict(stored.response), replayed=True)
    record = action(tx, data)
    tx.insert(
        idempotency_keys,
        key=key,
        action=name,
        request_hash=digest,
        response=record,
        created_ms=_now_ms(),
    )
    return ActionResult(record)


# --- records ------------------------------------------------------------------------

_CLIENT_FIELDS = {
    "firstName": "first_name",
    "lastName": "last_name",
    "companyName": "company_name",
    "email": "email",
    "phone": "phone",
    "address": "address",
    "tags": "tags",
    "ownerId": "owner_id",
}
"""The client fields an update may change (status has its own action)."""


def client_record(row: Mapping[Any, Any]) -> Record:
    record: Record = {"clientId": row["id"]}
    record.update({field: row[column] for field, column in _CLIENT_FIELDS.items()})
    record["status"] = row["status"]
    record["leadId"] = row["lead_id"]
    record["createdUtc"] = _utc(row["created_ms"])
    record["updatedUtc"] = _utc(row["updated_ms"])
    return record


def lead_record(row: Mapping[Any, Any]) -> Record:
    return {
        "leadId": row["id"],
        "firstName": row["first_name"],
        "lastName": row["last_name"],
        "companyName": row["company_name"],
        "email": row["email"],
        "phone": row["phone"],
        "source": row["source"],
        "status": row["status"],
        "estimatedValue": _money(row["estimated_amount"], row["estimated_currency"]),
        "assignedTo": row["assigned_to"],
        "notes": row["notes"],
        "createdUtc": _utc(row["created_ms"]),
        "clientId": row["client_id"],
        "convertedUtc": _utc(row["converted_ms"]),
    }


# --- clients ------------------------------------------------------------------------


def _insert_client(tx: _Tx, data: Data, lead_id: str | None = None) -> Record:
    now = _now_ms()
    values: Record = {
        "id": new_id("cli"),
        **{column: data.get(field) for field, column in _CLIENT_FIELDS.items()},
        "email": _email(data.get("email")),
        "tags": list(data.get("tags") or []),
        "status": data.get("status") or "prospect",
        "lead_id": lead_id,
        "created_ms": now,
        "updated_ms": now,
    }
    return tx.store(clients, "client.created", client_record(values), **values)


def _create_client(tx: _Tx, data: Data) -> Record:
    return _insert_client(tx, data)


def _changes(current: Record, data: Data) -> dict[str, Any]:
    wanted = {f: data[f] for f in _CLIENT_FIELDS if f in data}
    if "email" in wanted:
        wanted["email"] = _email(wanted["email"])
    return {f: v for f, v in wanted.items() if current[f] != v}


def _update_client(tx: _Tx, data: Data) -> Record:
    current = client_record(tx.find(clients, data["clientId"], "client"))
    changed = _changes(current, data)
    if not changed:
        return current
    now = _now_ms()
    values = {_CLIENT_FIELDS[f]: v for f, v in changed.items()}
    tx.conn.execute(
        update(clients).where(clients.c.id == current["clientId"]).values(updated_ms=now, **values)
    )
    record = {**current, **changed, "updatedUtc": _utc(now)}
    tx.emit(
        "client.updated",
        {
            **record,
            "changedFields": list(changed),
            "previousValues": {f: current[f] for f in changed},
            "updatedBy": None,
        },
    )
    return record


def _update_client_status(tx: _Tx, data: Data) -> Record:
    current = client_record(tx.find(clients, data["clientId"], "client"))
    status = data["status"]
    if current["status"] == status:
        raise Conflict("invalid_transition", f"the client is already {status}")
    now = _now_ms()
    tx.conn.execute(
        update(clients)
        .where(clients.c.id == current["clientId"])
        .values(status=status, updated_ms=now)
    )
    tx.emit(
        "client.status_changed",
        {
            "clientId": current["clientId"],
            "previousStatus": current["status"],
            "status": status,
            "reason": data.get("reason"),
            "changedBy": None,
            "changedUtc": _utc(now),
        },
    )
    return {**current, "status": status, "updatedUtc": _utc(now)}


# --- leads --------------------------------------------------------------------------


def _create_lead(tx: _Tx, data: Data) -> Record:
    value = data.get("estimatedValue") or {}
    values: Record = {
        "id": new_id("lead"),
        "first_name": data["firstName"],
        "last_name": data["lastName"],
        "company_name": data.get("companyName"),
        "email": _email(data.get("email")),
        "phone": data.get("phone"),
        "source": data.get("source"),
        "status": data.get("status") or "new",
        "estimated_amount": value.get("amount"),
        "estimated_currency": value.get("currency"),
        "assigned_to": data.get("assignedTo"),
        "notes": data.get("notes"),
        "client_id": None,
        "created_ms": _now_ms(),
        "converted_ms": None,
    }
    tx.insert(leads, **values)
    record = lead_record(values)
    tx.emit("lead.created", {k: v for k, v in record.items() if k not in _CONVERSION})
    return record


_CONVERSION = ("clientId", "convertedUtc")


def _convert_lead(tx: _Tx, data: Data) -> Record:
    lead = lead_record(tx.find(leads, data["leadId"], "lead"))
    if lead["clientId"] is not None:
        raise Conflict("invalid_transition", "the lead was already converted")
    client = _insert_client(
        tx, {**lead, "status": data.get("status"), "ownerId": data.get("ownerId")}, lead["leadId"]
    )
    now = _now_ms()
    tx.conn.execute(
        update(leads)
        .where(leads.c.id == lead["leadId"])
        .values(status="converted", client_id=client["clientId"], converted_ms=now)
    )
    converted = {"leadId": lead["leadId"], "clientId": client["clientId"]}
    tx.emit("lead.converted", {**converted, "convertedBy": None, "convertedUtc": _utc(now)})
    lead.update(converted, status="converted", convertedUtc=_utc(now))
    return {"lead": lead, "client": client}


# --- notes, payments, invoices, agreements -----------------------------------------


def _add_note(tx: _Tx, data: Data) -> Record:
    subject = data["subject"]
    table = clients if subject["type"] == "client" else leads
    tx.find(table, subject["id"], subject["type"])
    now = _now_ms()
    note_id = new_id("note")
    record: Record = {
        "noteId": note_id,
        "subject": {"type": subject["type"], "id": subject["id"]},
        "title": data.get("title"),
        "body": data["body"],
        "createdBy": None,
        "createdUtc": _utc(now),
    }
    return tx.store(
        notes,
        "note.created",
        record,
        id=note_id,
        subject_type=subject["type"],
        subject_id=subject["id"],
        title=data.get("title"),
        body=data["body"],
        created_ms=now,
    )


def _check_invoice(tx: _Tx, invoice_id: str | None, client_id: str) -> None:
    if invoice_id is None:
        return
    invoice = tx.find(invoices, invoice_id, "invoice")
    if invoice["client_id"] != client_id:
        raise Conflict("invoice_client_mismatch", "the invoice belongs to another client")


def _record_payment(tx: _Tx, data: Data) -> Record:
    tx.find(clients, data["clientId"], "client")
    _check_invoice(tx, data.get("invoiceId"), data["clientId"])
    now = _now_ms()
    record: Record = {
        "paymentId": new_id("pay"),
        "clientId": data["clientId"],
        "invoiceId": data.get("invoiceId"),
        "amount": dict(data["amount"]),
        "method": data["method"],
        "processorReference": data.get("processorReference"),
        "cardLast4": data.get("cardLast4"),
        "paidUtc": _utc(now),
    }
    return tx.store(
        payments,
        "payment.succeeded",
        record,
        id=record["paymentId"],
        amount=record["amount"]["amount"],
        currency=record["amount"]["currency"],
        paid_ms=now,
        **_columns(record, "clientId", "invoiceId", "method", "processorReference", "cardLast4"),
    )


def _line_items(data: Data, currency: str) -> list[Record]:
    items = []
    for item in data["lineItems"]:
        price = item["unitPrice"]["amount"]
        total = round(item["quantity"] * price)
        items.append(
            {
                "description": item["description"],
                "quantity": item["quantity"],
                "unitPrice": {"amount": price, "currency": currency},
                "total": {"amount": total, "currency": currency},
            }
        )
    return items


def _invoice_number(tx: _Tx) -> str:
    count = tx.conn.execute(
        select(func.count()).select_from(invoices).where(invoices.c.tenant_id == tx.tenant_id)
    ).scalar_one()
    return f"INV-{count + 1:05d}"


def _invoice_values(tx: _Tx, data: Data) -> Record:
    currency = data["lineItems"][0]["unitPrice"]["currency"]
    items = _line_items(data, currency)
    subtotal = sum(item["total"]["amount"] for item in items)
    tax = (data.get("tax") or {}).get("amount", 0)
    return {
        "invoiceId": new_id("inv"),
        "invoiceNumber": data.get("invoiceNumber") or _invoice_number(tx),
        "clientId": data["clientId"],
        "status": data.get("status") or "open",
        "issueDate": data.get("issueDate") or date.today().isoformat(),
        "dueDate": data["dueDate"],
        "lineItems": items,
        "subtotal": {"amount": subtotal, "currency": currency},
        "tax": {"amount": tax, "currency": currency},
        "total": {"amount": subtotal + tax, "currency": currency},
        "memo": data.get("memo"),
    }


def _create_invoice(tx: _Tx, data: Data) -> Record:
    tx.find(clients, data["clientId"], "client")
    now = _now_ms()
    record = {**_invoice_values(tx, data), "createdUtc": _utc(now)}
    plain = ("invoiceNumber", "clientId", "status", "issueDate", "dueDate", "lineItems", "memo")
    return tx.store(
        invoices,
        "invoice.created",
        record,
        id=record["invoiceId"],
        currency=record["total"]["currency"],
        subtotal=record["subtotal"]["amount"],
        tax=record["tax"]["amount"],
        total=record["total"]["amount"],
        created_ms=now,
        **_columns(record, *plain),
    )


def _sign_agreement(tx: _Tx, data: Data) -> Record:
    tx.find(clients, data["clientId"], "client")
    now = _now_ms()
    signer = data["signedBy"]
    record: Record = {
        "agreementId": new_id("agr"),
        "clientId": data["clientId"],
        "title": data.get("title"),
        "signedBy": {
            "name": signer["name"],
            "email": _email(signer.get("email")),
            "ipAddress": signer.get("ipAddress"),
        },
        "effectiveDate": data.get("effectiveDate"),
        "documentUrl": data.get("documentUrl"),
        "signedUtc": _utc(now),
    }
    return tx.store(
        agreements,
        "agreement.signed",
        record,
        id=record["agreementId"],
        signer_name=signer["name"],
        signer_email=record["signedBy"]["email"],
        signer_ip=record["signedBy"]["ipAddress"],
        signed_ms=now,
        **_columns(record, "clientId", "title", "effectiveDate", "documentUrl"),
    )


# --- the public actions ---------------------------------------------------------------
# Each has the same shape: (conn, outbox, tidings, tenant_id, data, idempotency_key).


def _action(impl: Action, name: str) -> Callable[..., ActionResult]:
    def run(
        conn: Connection,
        outbox: Outbox,
        tidings: Tidings,
        tenant_id: str,
        data: Data,
        idempotency_key: str | None = None,
    ) -> ActionResult:
        return _run(_Tx(conn, outbox, tidings, tenant_id), impl, data, idempotency_key, name)

    run.__name__ = run.__qualname__ = name
    run.__doc__ = impl.__doc__
    return run


ActionFn = Callable[[Connection, Outbox, Tidings, str, Data, str | None], ActionResult]

create_client: ActionFn = _action(_create_client, "create_client")
update_client: ActionFn = _action(_update_client, "update_client")
update_client_status: ActionFn = _action(_update_client_status, "update_client_status")
create_lead: ActionFn = _action(_create_lead, "create_lead")
convert_lead: ActionFn = _action(_convert_lead, "convert_lead")
add_note: ActionFn = _action(_add_note, "add_note")
record_payment: ActionFn = _action(_record_payment, "record_payment")
create_invoice: ActionFn = _action(_create_invoice, "create_invoice")
sign_agreement: ActionFn = _action(_sign_agreement, "sign_agreement")


# --- searches -----------------------------------------------------------------------


def find_clients(
    conn: Connection,
    tenant_id: str,
    email: str | None = None,
    phone: str | None = None,
    name: str | None = None,
) -> list[Record]:
    """Clients matching every given criterion: exact email (any case), exact phone,
    and a case-insensitive substring of "first last" or the company name."""
    query = select(clients).where(clients.c.tenant_id == tenant_id)
    if email is not None:
        query = query.where(clients.c.email == _email(email))
    if phone is not None:
        query = query.where(clients.c.phone == phone)
    if name is not None:
        needle = name.strip().lower()
        full = func.lower(clients.c.first_name + " " + clients.c.last_name)
        company = func.lower(clients.c.company_name)
        query = query.where(
            or_(full.contains(needle, autoescape=True), company.contains(needle, autoescape=True))
        )
    rows = conn.execute(query.order_by(clients.c.created_ms, clients.c.id).limit(SEARCH_LIMIT))
    return [client_record(row._mapping) for row in rows]


def find_leads(conn: Connection, tenant_id: str, email: str) -> list[Record]:
    """Leads whose email is ``email`` (any case), oldest first."""
    query = select(leads).where(leads.c.tenant_id == tenant_id, leads.c.email == _email(email))
    rows = conn.execute(query.order_by(leads.c.created_ms, leads.c.id).limit(SEARCH_LIMIT))
    return [lead_record(row._mapping) for row in rows]
