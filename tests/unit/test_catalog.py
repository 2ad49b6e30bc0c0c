"""The event-type catalog (tidings.domain.catalog), as an installation with the reference
CRM sees it: tidings' operational types, then the CRM's ten (tidings_crm.event_types)."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from tidings.domain.catalog import BUILT_IN, Catalog, DuplicateEventType, EventType
from tidings_crm.event_types import EVENT_TYPES

INSTALLATION = Catalog(EVENT_TYPES)
CATALOG = tuple(INSTALLATION)
find_event_type = INSTALLATION.find

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
CAMEL_CASE_RE = re.compile(r"^[a-z][a-zA-Z0-9]*$")
UTC_TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")

CRM_TYPES = {
    "client.created",
    "client.updated",
    "client.status_changed",
    "lead.created",
    "lead.converted",
    "note.created",
    "payment.succeeded",
    "payment.failed",
    "invoice.created",
    "agreement.signed",
}
OPERATIONAL_TYPES = {"subscription.disabled", "endpoint.verify"}

IDS = [event_type.name for event_type in CATALOG]


def _strict_format_checker() -> FormatChecker:
    """The draft 2020-12 format checker, with date-time pinned to ISO-8601 UTC ("...Z").

    This does not depend on optional jsonschema extras (rfc3339-validator), so the
    timestamp checks below cannot silently pass when the extra is not installed.
    """
    checker = FormatChecker()

    @checker.checks("date-time", raises=ValueError)
    def _utc_date_time(value: object) -> bool:
        if not isinstance(value, str):
            return True
        if not UTC_TIMESTAMP_RE.match(value):
            return False
        datetime.fromisoformat(value.replace("Z", "+00:00"))
        return True

    return checker


def _validator(event_type: EventType, checker: FormatChecker | None = None) -> Draft202012Validator:
    return Draft202012Validator(
        event_type.schema,
        format_checker=checker or Draft202012Validator.FORMAT_CHECKER,
    )


def _walk_properties(schema: Any, path: str = "$") -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """Yield (path, property name, property schema) for every named property, recursively."""
    if isinstance(schema, Mapping):
        for name, sub in (schema.get("properties") or {}).items():
            yield path, name, sub
            yield from _walk_properties(sub, f"{path}.{name}")
        for key in ("items", "additionalProperties"):
            if isinstance(schema.get(key), Mapping):
                yield from _walk_properties(schema[key], f"{path}[{key}]")
        for key in ("oneOf", "anyOf", "allOf"):
            for index, sub in enumerate(schema.get(key) or []):
                yield from _walk_properties(sub, f"{path}/{key}[{index}]")


def _walk_values(value: Any, path: str = "$") -> Iterator[tuple[str, Any]]:
    yield path, value
    if isinstance(value, Mapping):
        for key, sub in value.items():
            yield from _walk_values(sub, f"{path}.{key}")
    elif isinstance(value, list):
        for index, sub in enumerate(value):
            yield from _walk_values(sub, f"{path}[{index}]")


def _by_name(name: str) -> EventType:
    found = find_event_type(name)
    assert found is not None, f"{name} missing from the catalog"
    return found


# --- the catalog as a whole -------------------------------------------------


def test_catalog_is_a_non_empty_tuple_of_event_types() -> None:
    assert isinstance(CATALOG, tuple)
    assert len(CATALOG) == len(CRM_TYPES) + len(OPERATIONAL_TYPES)
    assert all(isinstance(event_type, EventType) for event_type in CATALOG)


def test_all_crm_types_are_present() -> None:
    names = {event_type.name for event_type in CATALOG}
    assert names >= CRM_TYPES, f"missing: {sorted(CRM_TYPES - names)}"


def test_operational_types_are_present() -> None:
    names = {event_type.name for event_type in CATALOG}
    assert names >= OPERATIONAL_TYPES, f"missing: {sorted(OPERATIONAL_TYPES - names)}"


def test_names_are_unique() -> None:
    names = [event_type.name for event_type in CATALOG]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    assert not duplicates


def test_names_are_unique_case_insensitively() -> None:
    lowered = [event_type.name.lower() for event_type in CATALOG]
    assert len(set(lowered)) == len(lowered)


@pytest.mark.parametrize("event_type", CATALOG, ids=IDS)
def test_name_is_lowercase_and_dotted(event_type: EventType) -> None:
    assert event_type.name == event_type.name.lower()
    assert NAME_RE.match(event_type.name), event_type.name


def test_order_groups_resources_and_puts_operational_types_last() -> None:
    names = [event_type.name for event_type in CATALOG]
    resources = [name.split(".")[0] for name in names]
    # Each resource appears in one contiguous run.
    runs = [
        resource
        for index, resource in enumerate(resources)
        if resources[index - 1 : index] != [resource]
    ]
    assert len(runs) == len(set(runs)), names
    assert set(names[-len(OPERATIONAL_TYPES) :]) == OPERATIONAL_TYPES


# --- descriptions -------------------------------------------------------------


@pytest.mark.parametrize("event_type", CATALOG, ids=IDS)
def test_description_is_one_sentence(event_type: EventType) -> None:
    description = event_type.description
    assert description == description.strip()
    assert description[0].isupper(), description
    assert description.endswith("."), description
    assert not re.search(r"[.!?]\s", description), f"more than one sentence: {description!r}"


@pytest.mark.parametrize("name", sorted(OPERATIONAL_TYPES))
def test_operational_types_say_so(name: str) -> None:
    assert "operational" in _by_name(name).description.lower()


@pytest.mark.parametrize("name", sorted(CRM_TYPES))
def test_crm_types_are_not_described_as_operational(name: str) -> None:
    assert "operational" not in _by_name(name).description.lower()


# --- schemas and samples --------------------------------------------------------


@pytest.mark.parametrize("event_type", CATALOG, ids=IDS)
def test_schema_is_a_valid_draft_2020_12_schema(event_type: EventType) -> None:
    Draft202012Validator.check_schema(event_type.schema)


@pytest.mark.parametrize("event_type", CATALOG, ids=IDS)
def test_schema_is_an_open_object_with_required_fields(event_type: EventType) -> None:
    schema = event_type.schema
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is True
    required = schema["required"]
    assert required, "required must not be empty"
    assert len(set(required)) == len(required)
    missing = set(required) - set(schema["properties"])
    assert not missing, f"required but not described: {sorted(missing)}"


@pytest.mark.parametrize("event_type", CATALOG, ids=IDS)
def test_sample_validates_against_schema(event_type: EventType) -> None:
    errors = sorted(_validator(event_type).iter_errors(event_type.sample), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


@pytest.mark.parametrize("event_type", CATALOG, ids=IDS)
def test_sample_timestamps_are_utc_iso8601(event_type: EventType) -> None:
    errors = list(_validator(event_type, _strict_format_checker()).iter_errors(event_type.sample))
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]


@pytest.mark.parametrize("event_type", CATALOG, ids=IDS)
def test_sample_fills_every_described_top_level_property(event_type: EventType) -> None:
    # A realistic sample shows every documented field, not just the required ones.
    missing = set(event_type.schema["properties"]) - set(event_type.sample)
    assert not missing, f"sample omits: {sorted(missing)}"


@pytest.mark.parametrize("event_type", CATALOG, ids=IDS)
def test_removing_a_required_field_invalidates_the_sample(event_type: EventType) -> None:
    validator = _validator(event_type)
    for field_name in event_type.schema["required"]:
        broken = copy.deepcopy(dict(event_type.sample))
        del broken[field_name]
        assert not validator.is_valid(broken), f"{field_name} is not enforced as required"


@pytest.mark.parametrize("event_type", CATALOG, ids=IDS)
def test_additional_host_fields_are_accepted(event_type: EventType) -> None:
    extended = copy.deepcopy(dict(event_type.sample))
    extended["hostCustomField"] = {"anything": [1, "two", None]}
    assert _validator(event_type).is_valid(extended)


@pytest.mark.parametrize("event_type", CATALOG, ids=IDS)
def test_schema_and_sample_are_plain_json(event_type: EventType) -> None:
    for value in (event_type.schema, event_type.sample):
        assert json.loads(json.dumps(value)) == value


@pytest.mark.parametrize("event_type", CATALOG, ids=IDS)
def test_property_names_are_camel_case(event_type: EventType) -> None:
    bad = [
        f"{path}.{name}"
        for path, name, _ in _walk_properties(event_type.schema)
        if not CAMEL_CASE_RE.match(name)
    ]
    assert not bad
    bad_sample = [
        f"{path}.{key}"
        for path, value in _walk_values(event_type.sample)
        if isinstance(value, Mapping) and path != "$.previousValues"
        for key in value
        if not CAMEL_CASE_RE.match(key)
    ]
    assert not bad_sample


@pytest.mark.parametrize("event_type", CATALOG, ids=IDS)
def test_utc_properties_are_date_times(event_type: EventType) -> None:
    for path, name, sub in _walk_properties(event_type.schema):
        if name.endswith("Utc"):
            assert sub.get("format") == "date-time", f"{path}.{name}"
        if sub.get("format") == "date-time":
            assert name.endswith("Utc"), f"{path}.{name} is a timestamp not named *Utc"


@pytest.mark.parametrize("event_type", CATALOG, ids=IDS)
def test_email_properties_use_email_format(event_type: EventType) -> None:
    for path, name, sub in _walk_properties(event_type.schema):
        if name.lower().endswith("email"):
            assert sub.get("format") == "email", f"{path}.{name}"


@pytest.mark.parametrize("event_type", CATALOG, ids=IDS)
def test_money_is_amount_in_minor_units_plus_currency(event_type: EventType) -> None:
    for path, value in _walk_values(event_type.sample):
        if not isinstance(value, Mapping):
            continue
        assert "amountCents" not in value, f"{path}: money must use {{amount, currency}}"
        if "currency" in value:
            assert set(value) == {"amount", "currency"}, path
            assert type(value["amount"]) is int, f"{path}.amount must be integer minor units"
            assert re.fullmatch(r"[A-Z]{3}", value["currency"]), path


@pytest.mark.parametrize("event_type", CATALOG, ids=IDS)
def test_malformed_timestamp_is_rejected(event_type: EventType) -> None:
    timestamp_fields = [
        name
        for name in event_type.schema["required"]
        if event_type.schema["properties"][name].get("format") == "date-time"
    ]
    if event_type.name == "endpoint.verify":
        assert not timestamp_fields
        return
    assert timestamp_fields, "every business event carries a required *Utc timestamp"
    validator = _validator(event_type, _strict_format_checker())
    for field_name in timestamp_fields:
        for bad in ("yesterday", "2026-01-28 10:30:00", "2026-01-28T10:30:00+02:00"):
            broken = copy.deepcopy(dict(event_type.sample))
            broken[field_name] = bad
            assert not validator.is_valid(broken), f"{field_name}={bad!r} accepted"


# --- per-type contract ----------------------------------------------------------


def _props(name: str) -> Mapping[str, Any]:
    properties: Mapping[str, Any] = _by_name(name).schema["properties"]
    return properties


def _required(name: str) -> set[str]:
    return set(_by_name(name).schema["required"])


def test_client_updated_lists_changed_field_names() -> None:
    event_type = _by_name("client.updated")
    assert {"clientId", "changedFields"} <= _required("client.updated")
    assert _props("client.updated")["changedFields"]["type"] == "array"
    sample = event_type.sample
    assert sample["changedFields"], "sample must name at least one changed field"
    # Every changed field is a real client field and its old value is reported.
    for changed in sample["changedFields"]:
        assert changed in _props("client.created"), changed
        assert changed in sample["previousValues"], changed
        assert sample["previousValues"][changed] != sample[changed], changed
    broken = copy.deepcopy(dict(sample))
    broken["changedFields"] = []
    assert not _validator(event_type).is_valid(broken)


def test_client_status_changed_uses_the_client_statuses() -> None:
    statuses = {"active", "inactive", "prospect", "archived"}
    assert {"clientId", "previousStatus", "status"} <= _required("client.status_changed")
    props = _props("client.status_changed")
    assert set(props["previousStatus"]["enum"]) == statuses
    assert set(props["status"]["enum"]) == statuses
    assert set(_props("client.created")["status"]["enum"]) == statuses
    sample = _by_name("client.status_changed").sample
    assert sample["previousStatus"] != sample["status"]
    broken = dict(sample, status="deleted")
    assert not _validator(_by_name("client.status_changed")).is_valid(broken)


def test_ids_carry_their_prefixes() -> None:
    prefixes = {
        "clientId": "cli_",
        "leadId": "lead_",
        "noteId": "note_",
        "paymentId": "pay_",
        "invoiceId": "inv_",
        "agreementId": "agr_",
    }
    seen: set[str] = set()
    for event_type in CATALOG:
        for path, value in _walk_values(event_type.sample):
            key = path.rsplit(".", 1)[-1]
            if key in prefixes and value is not None:
                seen.add(key)
                assert value.startswith(prefixes[key]), f"{event_type.name} {path}={value}"
    assert seen == set(prefixes)


def test_id_patterns_reject_the_wrong_prefix() -> None:
    event_type = _by_name("payment.succeeded")
    broken = dict(event_type.sample, clientId="lead_01KG2A6V4R8M3C9XJ7PQN5TW2E")
    assert not _validator(event_type).is_valid(broken)


def test_lead_converted_links_lead_and_client() -> None:
    assert {"leadId", "clientId"} <= _required("lead.converted")
    sample = _by_name("lead.converted").sample
    assert sample["leadId"].startswith("lead_")
    assert sample["clientId"].startswith("cli_")


@pytest.mark.parametrize(
    ("subject", "valid"),
    [
        ({"type": "client", "id": "cli_01KFZ3M8Q2D7W4XG5RVN6TC9HB"}, True),
        ({"type": "lead", "id": "lead_01KG2A6V4R8M3C9XJ7PQN5TW2E"}, True),
        ({"type": "client", "id": "lead_01KG2A6V4R8M3C9XJ7PQN5TW2E"}, False),
        ({"type": "lead", "id": "cli_01KFZ3M8Q2D7W4XG5RVN6TC9HB"}, False),
        ({"type": "invoice", "id": "inv_01KGD4S9J2P6M1QX7TB3RW8HZN"}, False),
        ({"id": "cli_01KFZ3M8Q2D7W4XG5RVN6TC9HB"}, False),
    ],
)
def test_note_subject_is_a_client_or_a_lead(subject: dict[str, str], valid: bool) -> None:
    event_type = _by_name("note.created")
    assert "subject" in _required("note.created")
    payload = dict(event_type.sample, subject=subject)
    assert _validator(event_type).is_valid(payload) is valid


def test_payment_failed_explains_the_failure() -> None:
    assert {"failureCode", "failureMessage", "amount"} <= _required("payment.failed")
    sample = _by_name("payment.failed").sample
    assert sample["failureCode"] and sample["failureMessage"]


def test_payment_amount_must_be_integer_minor_units() -> None:
    event_type = _by_name("payment.succeeded")
    assert "amount" in _required("payment.succeeded")
    broken = dict(event_type.sample, amount={"amount": 1299.5, "currency": "USD"})
    assert not _validator(event_type).is_valid(broken)
    broken = dict(event_type.sample, amount={"amount": 129900, "currency": "usd"})
    assert not _validator(event_type).is_valid(broken)


def test_invoice_created_has_line_items_total_and_due_date() -> None:
    event_type = _by_name("invoice.created")
    assert {"lineItems", "total", "dueDate"} <= _required("invoice.created")
    assert _props("invoice.created")["dueDate"]["format"] == "date"
    broken = dict(event_type.sample, lineItems=[])
    assert not _validator(event_type).is_valid(broken)
    broken = dict(event_type.sample, dueDate="2026-02-30")
    assert not _validator(event_type).is_valid(broken)


def test_invoice_sample_adds_up() -> None:
    sample = _by_name("invoice.created").sample
    currencies = {sample["total"]["currency"]}
    line_sum = 0
    for item in sample["lineItems"]:
        assert item["total"]["amount"] == item["quantity"] * item["unitPrice"]["amount"], item
        currencies |= {item["total"]["currency"], item["unitPrice"]["currency"]}
        line_sum += item["total"]["amount"]
    assert line_sum == sample["subtotal"]["amount"]
    assert sample["subtotal"]["amount"] + sample["tax"]["amount"] == sample["total"]["amount"]
    assert currencies == {"USD"}
    assert sample["issueDate"] <= sample["dueDate"]


def test_payment_sample_pays_the_invoice_sample() -> None:
    invoice = _by_name("invoice.created").sample
    payment = _by_name("payment.succeeded").sample
    assert payment["invoiceId"] == invoice["invoiceId"]
    assert payment["clientId"] == invoice["clientId"]
    assert payment["amount"] == invoice["total"]


def test_agreement_signed_identifies_the_signer() -> None:
    assert {"agreementId", "clientId", "signedBy", "signedUtc"} <= _required("agreement.signed")
    assert _props("agreement.signed")["signedUtc"]["format"] == "date-time"
    event_type = _by_name("agreement.signed")
    broken = dict(event_type.sample, signedBy={"email": "dana@whitfieldlandscaping.com"})
    assert not _validator(event_type).is_valid(broken)


def test_email_format_is_checked() -> None:
    event_type = _by_name("client.created")
    broken = dict(event_type.sample, email="not-an-email")
    assert not _validator(event_type).is_valid(broken)


def test_subscription_disabled_payload() -> None:
    event_type = _by_name("subscription.disabled")
    assert _required("subscription.disabled") == {
        "subscriptionId",
        "url",
        "reason",
        "consecutiveFailures",
        "disabledUtc",
    }
    props = _props("subscription.disabled")
    assert set(props["reason"]["enum"]) == {"breaker", "gone"}
    assert props["consecutiveFailures"]["type"] == "integer"
    assert props["disabledUtc"]["format"] == "date-time"
    validator = _validator(event_type)
    assert validator.is_valid(dict(event_type.sample, reason="gone", consecutiveFailures=1))
    assert not validator.is_valid(dict(event_type.sample, reason="manual"))
    assert not validator.is_valid(dict(event_type.sample, consecutiveFailures=20.5))
    assert not validator.is_valid(dict(event_type.sample, consecutiveFailures="20"))


def test_endpoint_verify_payload() -> None:
    event_type = _by_name("endpoint.verify")
    assert _required("endpoint.verify") == {"subscriptionId", "challenge"}
    assert _props("endpoint.verify")["challenge"]["type"] == "string"
    assert not _validator(event_type).is_valid(dict(event_type.sample, challenge=12345))


# --- lookup ---------------------------------------------------------------------


@pytest.mark.parametrize("event_type", CATALOG, ids=IDS)
def test_find_event_type_is_case_insensitive(event_type: EventType) -> None:
    name = event_type.name
    assert find_event_type(name) is event_type
    assert find_event_type(name.upper()) is event_type
    assert find_event_type(name.title()) is event_type
    swapped = "".join(ch.upper() if i % 2 else ch for i, ch in enumerate(name))
    assert find_event_type(swapped) is event_type


@pytest.mark.parametrize(
    "name",
    [
        "",
        "client",
        "client.",
        "client.deleted",
        "client.*",
        "*",
        "clients.created",
        "client.created ",
    ],
)
def test_find_event_type_returns_none_for_unknown(name: str) -> None:
    assert find_event_type(name) is None


# --- the dataclass ----------------------------------------------------------------


def test_event_type_is_frozen_and_hashable() -> None:
    event_type = CATALOG[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        event_type.name = "other.name"  # type: ignore[misc]
    assert len({hash(item) for item in CATALOG}) == len(CATALOG)


def test_schemas_do_not_share_nested_objects() -> None:
    # Mutating one schema (e.g. to build an OpenAPI document) must not leak into another.
    seen: dict[int, str] = {}
    for event_type in CATALOG:
        for path, value in _walk_values(event_type.schema):
            if isinstance(value, dict | list) and path != "$":
                owner = seen.setdefault(id(value), f"{event_type.name} {path}")
                assert owner == f"{event_type.name} {path}", f"shared with {owner}"


def test_apps_types_come_in_order_then_tidings_own() -> None:
    assert (*EVENT_TYPES, *BUILT_IN) == CATALOG
    assert {t.name for t in Catalog()} == OPERATIONAL_TYPES


def test_a_name_registered_twice_is_refused_whatever_its_case() -> None:
    catalog = Catalog(EVENT_TYPES)
    twin = dataclasses.replace(EVENT_TYPES[0], name=EVENT_TYPES[0].name.upper())
    with pytest.raises(DuplicateEventType):
        catalog.register(twin)
    with pytest.raises(DuplicateEventType):
        Catalog([*EVENT_TYPES, BUILT_IN[0]])
    assert len(catalog) == len(CATALOG)
