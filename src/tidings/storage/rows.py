"""Rows to records: how both connectors read what ``schema.py`` stores."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import RowMapping

from tidings.domain.deliveries import DisableReason
from tidings.domain.filters import filter_text
from tidings.domain.retry import RetryRules
from tidings.domain.signatures import SignatureScheme
from tidings.domain.subscriptions import Ordering, Subscription, SubscriptionKind
from tidings.storage.records import AttemptRecord, Page, StoredEvent

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")
R = TypeVar("R", bound="DataclassInstance")

EVENT_COLUMNS = "id, tenant_id, type, created_ms, body, request_hash, ordering_key, trace_context"
"""The columns an emitted event's row is written with, in :func:`event_values`' order."""


def event_values(event: StoredEvent) -> tuple[Any, ...]:
    return (
        event.id,
        event.tenant_id,
        event.type,
        event.created_ms,
        event.body,
        event.request_hash,
        event.ordering_key,
        event.trace_context,
    )


def subscription_of(row: RowMapping) -> Subscription:
    return record_of(
        Subscription,
        row,
        event_types=tuple(json.loads(row["event_types"])),
        enabled=bool(row["enabled"]),
        kind=SubscriptionKind(row["kind"]),
        disabled_reason=DisableReason(row["disabled_reason"]) if row["disabled_reason"] else None,
        ordering=Ordering(row["ordering"]) if row["ordering"] else None,
        signature_scheme=SignatureScheme(row["signature_scheme"]),
        retry=retry_rules_of(row["retry_policy"]),
        header_names=tuple(json.loads(row["header_names"])) if row["header_names"] else (),
        propagate_trace=bool(row["propagate_trace"]),
        filter=json.loads(row["filter"]) if row["filter"] else None,
    )


@functools.lru_cache(maxsize=1024)
def retry_rules_of(stored: str | None) -> RetryRules | None:
    """Parsed once per distinct policy: every claimed delivery carries its own. Lenient:
    a stored policy that today's rules would refuse keeps what is still valid, and never
    fails a claim (which would hold back every tenant's deliveries)."""
    return RetryRules.stored(json.loads(stored)) if stored else None


def dialect_columns(values: dict[str, Any]) -> dict[str, Any]:
    """A subscription's ``retry``, ``header_names`` and ``filter`` as the SQL stores keep
    them (JSON)."""
    if "retry" in values:
        retry = values.pop("retry")
        values["retry_policy"] = json.dumps(retry.to_dict()) if retry is not None else None
    if "header_names" in values:
        names = values["header_names"]
        values["header_names"] = json.dumps(list(names)) if names else None
    if "filter" in values:
        spec = values["filter"]
        values["filter"] = filter_text(spec) if spec is not None else None
    return values


def record_of(record: type[R], row: RowMapping, **computed: Any) -> R:
    """The record whose fields are the row's columns of the same names, but for those
    ``computed`` (a missing column is a KeyError: the schema and the record part ways)."""
    columns = {name: row[name] for name in field_names(record) if name not in computed}
    return record(**columns, **computed)


@functools.cache
def field_names(record: type[DataclassInstance]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(record))


def event_of(row: RowMapping) -> StoredEvent:
    return record_of(StoredEvent, row)


def attempt_of(row: RowMapping) -> AttemptRecord:
    return record_of(AttemptRecord, row)


def page_of(
    rows: Sequence[RowMapping], limit: int, key: str, convert: Callable[[RowMapping], T]
) -> Page[T]:
    """Rows were fetched with ``limit + 1``: an extra row means another page exists."""
    next_key = rows[limit - 1][key] if len(rows) > limit else None
    return Page([convert(r) for r in rows[:limit]], next_key)


def previous_secret(row: Any, now: int) -> list[str]:
    """The secret replaced by the last rotation, while its grace period lasts."""
    expires = row["previous_secret_expires_ms"]
    if row["previous_secret_enc"] and expires is not None and expires > now:
        return [row["previous_secret_enc"]]
    return []
