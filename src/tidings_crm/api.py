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

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
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


class _Person(Model):
    """The contact fields a client and a lead both start with."""

    first_name: Text
    last_name: Text
    company_name: Text | None = None
    email: Email | None = None
    phone: Phone | None = None


class CreateClient(_Person):
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


class CreateLead(_Person):
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

IdempotencyKey = Annotated[str | None, Header(min_length=1, max_length=255)]
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


@dataclass(frozen=True)
class _Route:
    """One action endpoint. ``path_id`` names the path parameter (if any), which the
    action receives in camelCase next to the body's fields."""

    method: str
    path: str
    action: actions.ActionFn
    body: type[Model]
    doc: str
    status: int = 201
    path_id: str | None = None
    partial: bool = False
    body_optional: bool = False


_ROUTES = [
    _Route(
        "POST",
        "/clients",
        actions.create_client,
        CreateClient,
        "Create a client; emits ``client.created``. A duplicate email is a 409.",
    ),
    _Route(
        "PATCH",
        "/clients/{client_id}",
        actions.update_client,
        UpdateClient,
        "Change some client fields; emits ``client.updated`` when anything changed.",
        status=200,
        path_id="client_id",
        partial=True,
    ),
    _Route(
        "POST",
        "/clients/{client_id}/status",
        actions.update_client_status,
        ChangeStatus,
        "Move a client to another status; emits ``client.status_changed`` (409 if unchanged).",
        status=200,
        path_id="client_id",
    ),
    _Route(
        "POST", "/leads", actions.create_lead, CreateLead, "Capture a lead; emits ``lead.created``."
    ),
    _Route(
        "POST",
        "/leads/{lead_id}/convert",
        actions.convert_lead,
        ConvertLead,
        "Turn a lead into a client; emits ``client.created`` and ``lead.converted``\n"
        "(409 if the lead was already converted).",
        path_id="lead_id",
        body_optional=True,
    ),
    _Route(
        "POST",
        "/notes",
        actions.add_note,
        AddNote,
        "Attach a note to a client or a lead; emits ``note.created``.",
    ),
    _Route(
        "POST",
        "/payments",
        actions.record_payment,
        RecordPayment,
        "Record a collected payment; emits ``payment.succeeded``.",
    ),
    _Route(
        "POST",
        "/invoices",
        actions.create_invoice,
        CreateInvoice,
        "Issue an invoice (totals computed from the line items); emits ``invoice.created``.",
    ),
    _Route(
        "POST",
        "/agreements",
        actions.sign_agreement,
        SignAgreement,
        "Record an agreement signed by a client; emits ``agreement.signed``.",
    ),
]


def _signature(route: _Route) -> inspect.Signature:
    """What FastAPI reads to validate the request and document the operation: the path
    id, the body, the Idempotency-Key header and the writer's key."""

    def param(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> Any:
        return inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default
        )

    path = [param(route.path_id, str)] if route.path_id else []
    body = (
        param("body", route.body | None, None) if route.body_optional else param("body", route.body)
    )
    return inspect.Signature(
        [
            *path,
            body,
            param("idempotency_key", IdempotencyKey, None),
            param("key", ApiKey, Writer),
            param("tidings", Tidings, Depends(get_tidings)),
        ],
        return_annotation=JSONResponse,
    )


def _endpoint(route: _Route) -> Callable[..., Awaitable[JSONResponse]]:
    async def endpoint(
        *,
        body: Model | None,
        idempotency_key: str | None,
        key: ApiKey,
        tidings: Tidings,
        **path: str,
    ) -> JSONResponse:
        ids = {to_camel(name): value for name, value in path.items()}
        data = _data(body or route.body(), partial=route.partial, **ids)
        return await _perform(tidings, key, route.action, data, idempotency_key, route.status)

    endpoint.__name__ = endpoint.__qualname__ = route.action.__name__
    endpoint.__doc__ = route.doc
    endpoint.__signature__ = _signature(route)  # type: ignore[attr-defined]
    return endpoint


for _route in _ROUTES:
    router.add_api_route(
        _route.path, _endpoint(_route), methods=[_route.method], status_code=_route.status
    )


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
