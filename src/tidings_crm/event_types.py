"""The CRM's ten event types: clients, leads, notes, payments, invoices, agreements.

Registered with tidings through :data:`tidings_crm.app`. Conventions beyond tidings' own
(see :mod:`tidings.domain.catalog`): identifiers carry the prefixes ``cli_``, ``lead_``,
``note_``, ``pay_``, ``inv_``, ``agr_``, ``usr_``; calendar dates (``dueDate``) use the
``date`` format; money is always ``{"amount": <integer minor units>, "currency": "USD"}``.
"""

from __future__ import annotations

from typing import Any, Final

from tidings import EventType, event_type

CLIENT_STATUSES: Final = ("active", "inactive", "prospect", "archived")
PAYMENT_METHODS: Final = ("card", "ach", "bank_transfer", "cash", "check", "other")

# Schema building blocks: each returns a fresh dict, so no two schemas share (and could
# accidentally mutate) a nested object.

_Schema = dict[str, Any]


def _id(prefix: str, description: str, *, nullable: bool = False) -> _Schema:
    return {
        "type": ["string", "null"] if nullable else "string",
        "pattern": f"^{prefix}_[A-Za-z0-9_-]+$",
        "description": description,
    }


def _opaque_id(description: str) -> _Schema:
    return {"type": "string", "minLength": 1, "description": description}


def _string(description: str, *, nullable: bool = False, min_length: int = 0) -> _Schema:
    schema: _Schema = {
        "type": ["string", "null"] if nullable else "string",
        "description": description,
    }
    if min_length:
        schema["minLength"] = min_length
    return schema


def _email(description: str, *, nullable: bool = False) -> _Schema:
    return {
        "type": ["string", "null"] if nullable else "string",
        "format": "email",
        "description": description,
    }


def _phone(description: str) -> _Schema:
    return {
        "type": ["string", "null"],
        "pattern": r"^\+[1-9][0-9]{6,14}$",
        "description": f"{description} (E.164).",
    }


def _timestamp(description: str, *, nullable: bool = False) -> _Schema:
    return {
        "type": ["string", "null"] if nullable else "string",
        "format": "date-time",
        "description": f"{description} (ISO-8601, UTC).",
    }


def _date(description: str) -> _Schema:
    return {"type": "string", "format": "date", "description": description}


def _enum(values: tuple[str, ...], description: str) -> _Schema:
    return {"type": "string", "enum": list(values), "description": description}


def _money(description: str, *, minimum: int | None = 0) -> _Schema:
    amount: _Schema = {
        "type": "integer",
        "description": "Amount in minor units of the currency (cents for USD).",
    }
    if minimum is not None:
        amount["minimum"] = minimum
    return {
        "type": "object",
        "description": description,
        "required": ["amount", "currency"],
        "properties": {
            "amount": amount,
            "currency": {
                "type": "string",
                "pattern": "^[A-Z]{3}$",
                "description": "ISO 4217 currency code, e.g. USD.",
            },
        },
        "additionalProperties": True,
    }


def _object(
    description: str, properties: dict[str, _Schema], required: list[str], *, nullable: bool = False
) -> _Schema:
    return {
        "type": ["object", "null"] if nullable else "object",
        "description": description,
        "required": required,
        "properties": properties,
        "additionalProperties": True,
    }


def _address() -> _Schema:
    return _object(
        "Postal address.",
        {
            "line1": _string("Street address.", nullable=True),
            "line2": _string("Suite, unit or floor.", nullable=True),
            "city": _string("City or locality.", nullable=True),
            "region": _string("State, province or region.", nullable=True),
            "postalCode": _string("Postal or ZIP code.", nullable=True),
            "country": {
                "type": ["string", "null"],
                "pattern": "^[A-Z]{2}$",
                "description": "ISO 3166-1 alpha-2 country code.",
            },
        },
        [],
        nullable=True,
    )


def _tags() -> _Schema:
    return {
        "type": "array",
        "items": {"type": "string", "minLength": 1},
        "uniqueItems": True,
        "description": "Free-form labels.",
    }


def _client_properties() -> dict[str, _Schema]:
    """The client record as it appears in client.* payloads."""
    return {
        "clientId": _id("cli", "Client identifier."),
        "firstName": _string("Primary contact's first name."),
        "lastName": _string("Primary contact's last name."),
        "companyName": _string("Business name, if the client is a company.", nullable=True),
        "email": _email("Primary email address.", nullable=True),
        "phone": _phone("Primary phone number"),
        "status": _enum(CLIENT_STATUSES, "Lifecycle status of the client."),
        "address": _address(),
        "tags": _tags(),
        "ownerId": _id("usr", "User who owns the client record.", nullable=True),
        "createdUtc": _timestamp("When the client was created"),
        "updatedUtc": _timestamp("When the client was last modified"),
    }


def _sample_client() -> dict[str, Any]:
    """Dana's client record as created; client.updated shows the same client later."""
    return {
        "clientId": "cli_01KFZ3M8Q2D7W4XG5RVN6TC9HB",
        "firstName": "Dana",
        "lastName": "Whitfield",
        "companyName": "Whitfield Landscaping LLC",
        "email": "dana@whitfieldlandscaping.com",
        "phone": "+15125550142",
        "status": "prospect",
        "address": {
            "line1": "4200 Riverside Dr",
            "line2": "Suite 210",
            "city": "Austin",
            "region": "TX",
            "postalCode": "78741",
            "country": "US",
        },
        "tags": ["landscaping", "referral"],
        "ownerId": "usr_01KE9N4T2W8Q6R3B7XMD5HC1JV",
        "createdUtc": "2026-01-28T10:30:00Z",
        "updatedUtc": "2026-01-28T10:30:00Z",
    }


CLIENT_CREATED = event_type(
    "client.created",
    "A new client record was created in the CRM.",
    _client_properties(),
    ["clientId", "firstName", "lastName", "status", "createdUtc"],
    _sample_client(),
)

_client_updated_properties = _client_properties()
_client_updated_properties.update(
    {
        "changedFields": {
            "type": "array",
            "items": {"type": "string", "pattern": "^[a-z][A-Za-z0-9]*$"},
            "minItems": 1,
            "uniqueItems": True,
            "description": "Names of the client fields that changed in this update.",
        },
        "previousValues": {
            "type": "object",
            "additionalProperties": True,
            "description": "Values of the changed fields before the update, keyed by field name.",
        },
        "updatedBy": _id(
            "usr", "User who made the change; null when made through the API.", nullable=True
        ),
    }
)

CLIENT_UPDATED = event_type(
    "client.updated",
    "One or more fields of an existing client record were changed.",
    _client_updated_properties,
    ["clientId", "changedFields", "updatedUtc"],
    {
        **_sample_client(),
        "email": "dana.whitfield@whitfieldlandscaping.com",
        "phone": "+15125550199",
        "status": "active",
        "updatedUtc": "2026-02-03T15:12:44Z",
        "changedFields": ["email", "phone"],
        "previousValues": {
            "email": "dana@whitfieldlandscaping.com",
            "phone": "+15125550142",
        },
        "updatedBy": "usr_01KE9N4T2W8Q6R3B7XMD5HC1JV",
    },
)

CLIENT_STATUS_CHANGED = event_type(
    "client.status_changed",
    "A client's lifecycle status changed, for example from prospect to active.",
    {
        "clientId": _id("cli", "Client identifier."),
        "previousStatus": _enum(CLIENT_STATUSES, "Status before the change."),
        "status": _enum(CLIENT_STATUSES, "Status after the change."),
        "reason": _string("Optional note explaining the change.", nullable=True),
        "changedBy": _id(
            "usr", "User who changed the status; null when changed through the API.", nullable=True
        ),
        "changedUtc": _timestamp("When the status changed"),
    },
    ["clientId", "previousStatus", "status", "changedUtc"],
    {
        "clientId": "cli_01KFZ3M8Q2D7W4XG5RVN6TC9HB",
        "previousStatus": "prospect",
        "status": "active",
        "reason": "Signed the annual maintenance agreement.",
        "changedBy": "usr_01KE9N4T2W8Q6R3B7XMD5HC1JV",
        "changedUtc": "2026-02-03T15:20:00Z",
    },
)

LEAD_CREATED = event_type(
    "lead.created",
    "A new sales lead was captured.",
    {
        "leadId": _id("lead", "Lead identifier."),
        "firstName": _string("Contact's first name."),
        "lastName": _string("Contact's last name."),
        "companyName": _string("Business name, if any.", nullable=True),
        "email": _email("Contact's email address.", nullable=True),
        "phone": _phone("Contact's phone number"),
        "source": _string(
            "Where the lead came from, e.g. website, referral, import.", nullable=True
        ),
        "status": _string("Pipeline stage of the lead, e.g. new.", nullable=True),
        "estimatedValue": {
            **_money("Estimated deal value, if known."),
            "type": ["object", "null"],
        },
        "assignedTo": _id("usr", "User the lead is assigned to.", nullable=True),
        "notes": _string("Free-text notes captured with the lead.", nullable=True),
        "createdUtc": _timestamp("When the lead was created"),
    },
    ["leadId", "firstName", "lastName", "createdUtc"],
    {
        "leadId": "lead_01KG2A6V4R8M3C9XJ7PQN5TW2E",
        "firstName": "Marcus",
        "lastName": "Okafor",
        "companyName": "Okafor Dental Group",
        "email": "marcus.okafor@okafordental.com",
        "phone": "+14155550187",
        "source": "website",
        "status": "new",
        "estimatedValue": {"amount": 480000, "currency": "USD"},
        "assignedTo": "usr_01KE9N4T2W8Q6R3B7XMD5HC1JV",
        "notes": "Asked for a quote on quarterly grounds maintenance for two offices.",
        "createdUtc": "2026-01-29T09:05:17Z",
    },
)

LEAD_CONVERTED = event_type(
    "lead.converted",
    "A lead was converted into a client.",
    {
        "leadId": _id("lead", "Identifier of the converted lead."),
        "clientId": _id("cli", "Identifier of the client created from the lead."),
        "convertedBy": _id(
            "usr",
            "User who converted the lead; null when converted through the API.",
            nullable=True,
        ),
        "convertedUtc": _timestamp("When the lead was converted"),
    },
    ["leadId", "clientId", "convertedUtc"],
    {
        "leadId": "lead_01KG2A6V4R8M3C9XJ7PQN5TW2E",
        "clientId": "cli_01KGQ7T2B9N4E6YH3SWP8JD5KM",
        "convertedBy": "usr_01KE9N4T2W8Q6R3B7XMD5HC1JV",
        "convertedUtc": "2026-02-05T14:48:09Z",
    },
)

NOTE_CREATED = event_type(
    "note.created",
    "A note was added to a client or a lead.",
    {
        "noteId": _id("note", "Note identifier."),
        "subject": {
            "type": "object",
            "description": "The record the note is attached to.",
            "required": ["type", "id"],
            "properties": {
                "type": _enum(("client", "lead"), "Kind of record the note is attached to."),
                "id": _string("Identifier of the client (cli_…) or lead (lead_…).", min_length=1),
            },
            "additionalProperties": True,
            "oneOf": [
                {
                    "properties": {
                        "type": {"const": "client"},
                        "id": {"pattern": "^cli_[A-Za-z0-9_-]+$"},
                    }
                },
                {
                    "properties": {
                        "type": {"const": "lead"},
                        "id": {"pattern": "^lead_[A-Za-z0-9_-]+$"},
                    }
                },
            ],
        },
        "title": _string("Short title of the note.", nullable=True),
        "body": _string("Text of the note.", min_length=1),
        "createdBy": _id(
            "usr", "Author of the note; null when created through the API.", nullable=True
        ),
        "createdUtc": _timestamp("When the note was created"),
    },
    ["noteId", "subject", "body", "createdUtc"],
    {
        "noteId": "note_01KGTB5F7K1Q9Z3WD2RX8M4NCY",
        "subject": {"type": "client", "id": "cli_01KFZ3M8Q2D7W4XG5RVN6TC9HB"},
        "title": "Site walk-through",
        "body": (
            "Walked the property with Dana; irrigation on the north lawn needs two new zones"
            " before spring."
        ),
        "createdBy": "usr_01KE9N4T2W8Q6R3B7XMD5HC1JV",
        "createdUtc": "2026-02-06T17:22:31Z",
    },
)


def _payment_properties() -> dict[str, _Schema]:
    return {
        "paymentId": _id("pay", "Payment identifier."),
        "clientId": _id("cli", "Client who paid."),
        "invoiceId": _id("inv", "Invoice the payment applies to, if any.", nullable=True),
        "amount": _money("Amount of the payment.", minimum=1),
        "method": _enum(PAYMENT_METHODS, "Payment method."),
        "processorReference": _string(
            "Reference assigned by the payment processor.", nullable=True
        ),
    }


_payment_succeeded_properties = _payment_properties()
_payment_succeeded_properties.update(
    {
        "cardLast4": {
            "type": ["string", "null"],
            "pattern": "^[0-9]{4}$",
            "description": "Last four digits of the card, for card payments.",
        },
        "paidUtc": _timestamp("When the payment succeeded"),
    }
)

PAYMENT_SUCCEEDED = event_type(
    "payment.succeeded",
    "A payment from a client was collected successfully.",
    _payment_succeeded_properties,
    ["paymentId", "clientId", "amount", "method", "paidUtc"],
    {
        "paymentId": "pay_01KH4C2W7N8B3K9YQ6TR5XGM1D",
        "clientId": "cli_01KFZ3M8Q2D7W4XG5RVN6TC9HB",
        "invoiceId": "inv_01KGD4S9J2P6M1QX7TB3RW8HZN",
        "amount": {"amount": 129900, "currency": "USD"},
        "method": "card",
        "processorReference": "ch_3QkZp2LkdIwHu7ix0uTz8a1B",
        "cardLast4": "4242",
        "paidUtc": "2026-02-10T16:04:52Z",
    },
)

_payment_failed_properties = _payment_properties()
_payment_failed_properties.update(
    {
        "failureCode": _string("Machine-readable failure code, e.g. card_declined.", min_length=1),
        "failureMessage": _string("Human-readable explanation of the failure.", min_length=1),
        "attemptNumber": {
            "type": "integer",
            "minimum": 1,
            "description": "Which collection attempt failed, starting at 1.",
        },
        "failedUtc": _timestamp("When the payment failed"),
    }
)

PAYMENT_FAILED = event_type(
    "payment.failed",
    "An attempt to collect a payment from a client failed.",
    _payment_failed_properties,
    ["paymentId", "clientId", "amount", "method", "failureCode", "failureMessage", "failedUtc"],
    {
        "paymentId": "pay_01KH1X8P4C9M3Z6RT2WQ7VNB5E",
        "clientId": "cli_01KFZ3M8Q2D7W4XG5RVN6TC9HB",
        "invoiceId": "inv_01KGD4S9J2P6M1QX7TB3RW8HZN",
        "amount": {"amount": 129900, "currency": "USD"},
        "method": "card",
        "processorReference": "ch_3QkZq5LkdIwHu7ix1Pq9rT4c",
        "failureCode": "card_declined",
        "failureMessage": "The card was declined by the issuing bank (insufficient funds).",
        "attemptNumber": 1,
        "failedUtc": "2026-02-09T16:03:10Z",
    },
)

INVOICE_CREATED = event_type(
    "invoice.created",
    "A new invoice was issued to a client.",
    {
        "invoiceId": _id("inv", "Invoice identifier."),
        "invoiceNumber": _string("Human-readable invoice number.", min_length=1),
        "clientId": _id("cli", "Client being invoiced."),
        "status": _enum(("draft", "open"), "Status of the invoice when it was created."),
        "issueDate": _date("Date the invoice was issued."),
        "dueDate": _date("Date payment is due."),
        "lineItems": {
            "type": "array",
            "minItems": 1,
            "description": "Billed items, in display order.",
            "items": _object(
                "One billed item.",
                {
                    "description": _string("What is being billed.", min_length=1),
                    "quantity": {
                        "type": "number",
                        "exclusiveMinimum": 0,
                        "description": "Number of units billed.",
                    },
                    "unitPrice": _money("Price of one unit.", minimum=None),
                    "total": _money("Line total (quantity times unit price).", minimum=None),
                },
                ["description", "quantity", "unitPrice", "total"],
            ),
        },
        "subtotal": _money("Sum of the line totals."),
        "tax": _money("Tax charged on the invoice."),
        "total": _money("Amount due: subtotal plus tax."),
        "memo": _string("Note printed on the invoice.", nullable=True),
        "createdUtc": _timestamp("When the invoice was created"),
    },
    ["invoiceId", "clientId", "lineItems", "total", "dueDate", "createdUtc"],
    {
        "invoiceId": "inv_01KGD4S9J2P6M1QX7TB3RW8HZN",
        "invoiceNumber": "INV-2026-0042",
        "clientId": "cli_01KFZ3M8Q2D7W4XG5RVN6TC9HB",
        "status": "open",
        "issueDate": "2026-02-01",
        "dueDate": "2026-03-03",
        "lineItems": [
            {
                "description": "Monthly grounds maintenance (February)",
                "quantity": 1,
                "unitPrice": {"amount": 85000, "currency": "USD"},
                "total": {"amount": 85000, "currency": "USD"},
            },
            {
                "description": "Irrigation zone installation",
                "quantity": 2,
                "unitPrice": {"amount": 16500, "currency": "USD"},
                "total": {"amount": 33000, "currency": "USD"},
            },
        ],
        "subtotal": {"amount": 118000, "currency": "USD"},
        "tax": {"amount": 11900, "currency": "USD"},
        "total": {"amount": 129900, "currency": "USD"},
        "memo": "Thank you for your business.",
        "createdUtc": "2026-02-01T08:00:00Z",
    },
)

AGREEMENT_SIGNED = event_type(
    "agreement.signed",
    "A client signed an agreement such as a service contract.",
    {
        "agreementId": _id("agr", "Agreement identifier."),
        "clientId": _id("cli", "Client the agreement is with."),
        "title": _string("Title of the agreement.", nullable=True),
        "signedBy": _object(
            "The person who signed.",
            {
                "name": _string("Signer's full name.", min_length=1),
                "email": _email("Signer's email address.", nullable=True),
                "ipAddress": {
                    "type": ["string", "null"],
                    "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}],
                    "description": "IP address the signature was made from, if captured.",
                },
            },
            ["name"],
        ),
        "effectiveDate": {
            "type": ["string", "null"],
            "format": "date",
            "description": "Date the agreement takes effect.",
        },
        "documentUrl": {
            "type": ["string", "null"],
            "format": "uri",
            "description": "Link to the signed document.",
        },
        "signedUtc": _timestamp("When the agreement was signed"),
    },
    ["agreementId", "clientId", "signedBy", "signedUtc"],
    {
        "agreementId": "agr_01KGQ6H2V9T4C0BXM8RN3PDW7Y",
        "clientId": "cli_01KFZ3M8Q2D7W4XG5RVN6TC9HB",
        "title": "Annual Grounds Maintenance Agreement 2026",
        "signedBy": {
            "name": "Dana Whitfield",
            "email": "dana@whitfieldlandscaping.com",
            "ipAddress": "203.0.113.24",
        },
        "effectiveDate": "2026-03-01",
        "documentUrl": "https://crm.example.com/agreements/agr_01KGQ6H2V9T4C0BXM8RN3PDW7Y.pdf",
        "signedUtc": "2026-02-03T15:18:27Z",
    },
)


EVENT_TYPES: Final[tuple[EventType, ...]] = (
    CLIENT_CREATED,
    CLIENT_UPDATED,
    CLIENT_STATUS_CHANGED,
    LEAD_CREATED,
    LEAD_CONVERTED,
    NOTE_CREATED,
    PAYMENT_SUCCEEDED,
    PAYMENT_FAILED,
    INVOICE_CREATED,
    AGREEMENT_SIGNED,
)
