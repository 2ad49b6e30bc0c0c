"""The CRM's Integration API: 9 actions and 2 searches under ``/api/v1``.

Built only on tidings' public API: ``require(scope)`` authenticates the ``X-Api-Key``
(actions need ``events:write``, searches ``events:read``), ``ApiError`` gives the
shared error shape, and every action runs in ``Tidings.transaction`` so its row and
its event commit together. Action endpoints accept an ``Idempotency-Key`` header; a
replay answers with the stored record and ``Idempotent-Replayed: true``.

:func:`create_tables` (the app's ``on_startup``) creates the ``crm_`` tables with
``MetaData.create_all`` inside ``Tidings.transaction``. That is acceptable for this example
application; a real host application would version its schema with migrations.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse
from pydantic import AnyUrl, BaseModel, ConfigDict, Field, IPvAnyAddress, model_validator
from pydantic.alias_generators import to_camel
from sqlalchemy.exc import IntegrityError

from tidings import ApiError, ApiKey, Tidings, get_tidings, not_found, require
from tidings_crm import actions
from tidings_crm.schema import metadata

router = APIRouter(prefix="/api/v1", tags=["crm"])

# --- request models -----------------------------------------------------------------

Text = Annotated[str, Field(min_length=1, max_length=200)]
LongText = Annotated[str, Field(min_length=1, max_length=10_000)]
Email = Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=320)]
Phone = Annotated[str, Field(pattern=r"^\+[1-9][0-9]{6,14}$")]
UserId = Annotated[str, Field(pattern=r"^usr_[A-Za-z0-9_-]+$", max_length=40)]
ClientId = Annotated[str, Field(pattern=r"^cli_[A-Za-z0-9_-]+$", max_length=40)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
Status = Literal["active", "inactive", "prospect", "archived"]


class Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, extra="forbid")


class Money(Model):
    amount: int = Field(ge=0, description="Minor units (cents for USD).")
    currency: Currency = "USD"


class PositiveMoney(Money):
    amount: int = Field(ge=1, description="Minor units (cents for USD).")


class Address(Model):
    line1: str | None = None
    line2: str | None = None
    city: str | None = None
    region: str | None = None
    postal_code: str | None = None
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] | None = None


class CreateClient(Model):
    first_name: Text
    last_name: Text
    company_name: Text | None = None
    email: Email | None = None
    phone: Phone | None = None
    status: Status = "prospect"
    address: Address | None = None
    tags: list[Text] = Field(default_factory=list, max_length=50)
    owner_id: UserId | None = None

    @model_validator(mode="after")
    def _unique_tags(self) -> CreateClient:
        if len(set(self.tags)) != len(self.tags):
            raise ValueError("tags must be unique")
        return self


class UpdateClient(Model):
    """Only the fields present change; status has its own action."""

    first_name: Text | None = None
    last_name: Text | None = None
    company_name: Text | None = None
    email: Email | None = None
    phone: Phone | None = None
    address: Address | None = None
    tags: list[Text] | None = Field(default=None, max_length=50)
    owner_id: UserId | None = None

    @model_validator(mode="after")
    def _required_not_null(self) -> UpdateClient:
        for name in ("first_name", "last_name", "tags"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{to_camel(name)} may not be null")
        return self


class ChangeStatus(Model):
    status: Status
    reason: LongText | None = None


class CreateLead(Model):
    first_name: Text
    last_name: Text
    company_name: Text | None = None
    email: Email | None = None
    phone: Phone | None = None
    source: Text | None = None
    status: Text = "new"
    estimated_value: Money | None = None
    assigned_to: UserId | None = None
    notes: LongText | None = None


class ConvertLead(Model):
    status: Status = "active"
    owner_id: UserId | None = None


class Subject(Model):
    type: Literal["client", "lead"]
    id: Annotated[str, Field(pattern=r"^(cli|lead)_[A-Za-z0-9_-]+$", max_length=40)]


class AddNote(Model):
    subject: Subject
    title: Text | None = None
    body: LongText


class RecordPayment(Model):
    client_id: ClientId
    invoice_id: Annotated[str, Field(pattern=r"^inv_[A-Za-z0-9_-]+$")] | None = None
    amount: PositiveMoney
    method: Literal["card", "ach", "bank_transfer", "cash", "check", "other"]
    processor_reference: Text | None = None
    card_last4: Annotated[str, Field(pattern=r"^[0-9]{4}$")] | None = None


class LineItem(Model):
    description: Text
    quantity: float = Field(gt=0, le=1_000_000)
    unit_price: Money


class CreateInvoice(Model):
    client_id: ClientId
    invoice_number: Annotated[str, Field(min_length=1, max_length=40)] | None = None
    status: Literal["draft", "open"] = "open"
    issue_date: date | None = None
    due_date: date
    line_items: list[LineItem] = Field(min_length=1, max_length=200)
    tax: Money | None = None
    memo: LongText | None = None

    @model_validator(mode="after")
    def _one_currency(self) -> CreateInvoice:
        prices = [item.unit_price for item in self.line_items]
        if len({m.currency for m in [*prices, *([self.tax] if self.tax else [])]}) > 1:
            raise ValueError("every amount must use the same currency")
        return self


class Signer(Model):
    name: Text
    email: Email | None = None
    ip_address: IPvAnyAddress | None = None


class SignAgreement(Model):
    client_id: ClientId
    title: Text | None = None
    signed_by: Signer
    effective_date: date | None = None
    document_url: AnyUrl | None = None


# --- running actions ----------------------------------------------------------------

IdempotencyKey = Annotated[str | None, Header(max_length=255)]
Writer = Depends(require("events:write"))
Reader = Depends(require("events:read"))


def _data(model: BaseModel, *, partial: bool = False, **extra: Any) -> dict[str, Any]:
    """The validated body as camelCase JSON values (only the sent fields if ``partial``)."""
    return {**model.model_dump(mode="json", by_alias=True, exclude_unset=partial), **extra}


async def _call(
    tidings: Tidings,
    key: ApiKey,
    action: actions.ActionFn,
    data: Mapping[str, Any],
    idem: str | None,
) -> actions.ActionResult:
    return await tidings.transaction(
        lambda conn, outbox: action(conn, outbox, tidings, key.tenant_id, data, idem)
    )


async def _perform(
    tidings: Tidings,
    key: ApiKey,
    action: actions.ActionFn,
    data: Mapping[str, Any],
    idem: str | None,
    status: int = 200,
) -> JSONResponse:
    """Run one action in its own transaction and translate its failures to API errors."""
    try:
        try:
            outcome = await _call(tidings, key, action, data, idem)
        except IntegrityError:
            if idem is None:
                raise
            outcome = await _call(tidings, key, action, data, idem)  # lost a key race: replay
    except actions.NotFound as exc:
        raise not_found(exc.what) from exc
    except actions.Conflict as exc:
        raise ApiError(409, exc.code, exc.message) from exc
    except IntegrityError as exc:
        raise ApiError(409, "conflict", "a record with these unique values exists") from exc
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else None
    return JSONResponse(outcome.record, status_code=status, headers=headers)


# --- actions ------------------------------------------------------------------------


@router.post("/clients", status_code=201)
async def create_client(
    body: CreateClient,
    idempotency_key: IdempotencyKey = None,
    key: ApiKey = Writer,
    tidings: Tidings = Depends(get_tidings),
) -> JSONResponse:
    """Create a client; emits ``client.created``. A duplicate email is a 409."""
    return await _perform(tidings, key, actions.create_client, _data(body), idempotency_key, 201)


@router.patch("/clients/{client_id}")
async def update_client(
    client_id: str,
    body: UpdateClient,
    idempotency_key: IdempotencyKey = None,
    key: ApiKey = Writer,
    tidings: Tidings = Depends(get_tidings),
) -> JSONResponse:
    """Change some client fields; emits ``client.updated`` when anything changed."""
    data = _data(body, partial=True, clientId=client_id)
    return await _perform(tidings, key, actions.update_client, data, idempotency_key)


@router.post("/clients/{client_id}/status")
async def update_client_status(
    client_id: str,
    body: ChangeStatus,
    idempotency_key: IdempotencyKey = None,
    key: ApiKey = Writer,
    tidings: Tidings = Depends(get_tidings),
) -> JSONResponse:
    """Move a client to another status; emits ``client.status_changed`` (409 if unchanged)."""
    data = _data(body, clientId=client_id)
    return await _perform(tidings, key, actions.update_client_status, data, idempotency_key)


@router.post("/leads", status_code=201)
async def create_lead(
    body: CreateLead,
    idempotency_key: IdempotencyKey = None,
    key: ApiKey = Writer,
    tidings: Tidings = Depends(get_tidings),
) -> JSONResponse:
    """Capture a lead; emits ``lead.created``."""
    return await _perform(tidings, key, actions.create_lead, _data(body), idempotency_key, 201)


@router.post("/leads/{lead_id}/convert", status_code=201)
async def convert_lead(
    lead_id: str,
    body: ConvertLead | None = None,
    idempotency_key: IdempotencyKey = None,
    key: ApiKey = Writer,
    tidings: Tidings = Depends(get_tidings),
) -> JSONResponse:
    """Turn a lead into a client; emits ``client.created`` and ``lead.converted``
    (409 if the lead was already converted)."""
    data = _data(body or ConvertLead(), leadId=lead_id)
    return await _perform(tidings, key, actions.convert_lead, data, idempotency_key, 201)


@router.post("/notes", status_code=201)
async def add_note(
    body: AddNote,
    idempotency_key: IdempotencyKey = None,
    key: ApiKey = Writer,
    tidings: Tidings = Depends(get_tidings),
) -> JSONResponse:
    """Attach a note to a client or a lead; emits ``note.created``."""
    return await _perform(tidings, key, actions.add_note, _data(body), idempotency_key, 201)


@router.post("/payments", status_code=201)
async def record_payment(
    body: RecordPayment,
    idempotency_key: IdempotencyKey = None,
    key: ApiKey = Writer,
    tidings: Tidings = Depends(get_tidings),
) -> JSONResponse:
    """Record a collected payment; emits ``payment.succeeded``."""
    return await _perform(tidings, key, actions.record_payment, _data(body), idempotency_key, 201)


@router.post("/invoices", status_code=201)
async def create_invoice(
    body: CreateInvoice,
    idempotency_key: IdempotencyKey = None,
    key: ApiKey = Writer,
    tidings: Tidings = Depends(get_tidings),
) -> JSONResponse:
    """Issue an invoice (totals computed from the line items); emits ``invoice.created``."""
    return await _perform(tidings, key, actions.create_invoice, _data(body), idempotency_key, 201)


@router.post("/agreements", status_code=201)
async def sign_agreement(
    body: SignAgreement,
    idempotency_key: IdempotencyKey = None,
    key: ApiKey = Writer,
    tidings: Tidings = Depends(get_tidings),
) -> JSONResponse:
    """Record an agreement signed by a client; emits ``agreement.signed``."""
    return await _perform(tidings, key, actions.sign_agreement, _data(body), idempotency_key, 201)


# --- searches -----------------------------------------------------------------------


@router.get("/clients/search")
async def find_clients(
    email: Annotated[str | None, Query(max_length=320)] = None,
    phone: Annotated[str | None, Query(max_length=20)] = None,
    name: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    key: ApiKey = Reader,
    tidings: Tidings = Depends(get_tidings),
) -> list[dict[str, Any]]:
    """Clients matching every given criterion (at least one of email, phone, name)."""
    if email is None and phone is None and name is None:
        raise ApiError(422, "validation_error", "give at least one of email, phone, name")
    return await tidings.transaction(
        lambda conn, _: actions.find_clients(conn, key.tenant_id, email, phone, name)
    )


@router.get("/leads/search")
async def find_leads(
    email: Annotated[str, Query(min_length=1, max_length=320)],
    key: ApiKey = Reader,
    tidings: Tidings = Depends(get_tidings),
) -> list[dict[str, Any]]:
    """Leads with this email address (any case)."""
    return await tidings.transaction(lambda conn, _: actions.find_leads(conn, key.tenant_id, email))


# --- mounting -----------------------------------------------------------------------


async def create_tables(tidings: Tidings) -> None:
    """Create the ``crm_`` tables if missing (see the module docstring)."""
    await tidings.transaction(lambda conn, _: metadata.create_all(conn))
