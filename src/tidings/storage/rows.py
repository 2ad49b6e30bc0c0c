"""Rows to records: how both connectors read what ``schema.py`` stores."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import RowMapping

from tidings.domain.deliveries import DisableReason
from tidings.domain.filters import filter_text
from tidings.domain.retry import RetryRules
from tidings.domain.signatures import SignatureScheme
from tidings.domain.subscriptions import Ordering, Subscription, SubscriptionKind
from tidings.storage.records import AttemptRecord, Page, StoredEvent

T = TypeVar("T")

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
    return Subscription(
        id=row["id"],
        tenant_id=row["tenant_id"],
        url=row["url"],
        event_types=tuple(json.loads(row["event_types"])),
        enabled=bool(row["enabled"]),
        description=row["description"],
        kind=SubscriptionKind(row["kind"]),
        disabled_reason=DisableReason(row["disabled_reason"]) if row["disabled_reason"] else None,
        consecutive_failures=row["consecutive_failures"],
        created_ms=row["created_ms"],
        updated_ms=row["updated_ms"],
        max_concurrency=row["max_concurrency"],
        rate_limit=row["rate_limit"],
        public_key=row["public_key"],
        previous_secret_expires_ms=row["previous_secret_expires_ms"],
        previous_public_key=row["previous_public_key"],
        ordering=Ordering(row["ordering"]) if row["ordering"] else None,
        signature_scheme=SignatureScheme(row["signature_scheme"]),
        retry=retry_rules_of(row["retry_policy"]),
        header_names=tuple(json.loads(row["header_names"])) if row["header_names"] else (),
        propagate_trace=bool(row["propagate_trace"]),
        filter=json.loads(row["filter"]) if row["filter"] else None,
        transformation=row["transformation"],
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


def event_of(row: RowMapping) -> StoredEvent:
    return StoredEvent(
        seq=row["seq"],
        id=row["id"],
        tenant_id=row["tenant_id"],
        type=row["type"],
        created_ms=row["created_ms"],
        body=row["body"],
        request_hash=row["request_hash"],
        ordering_key=row["ordering_key"],
        trace_context=row["trace_context"],
    )


def attempt_of(row: RowMapping) -> AttemptRecord:
    return AttemptRecord(
        id=row["id"],
        delivery_id=row["delivery_id"],
        event_id=row["event_id"],
        subscription_id=row["subscription_id"],
        attempt=row["attempt"],
        outcome=row["outcome"],
        status_code=row["status_code"],
        elapsed_ms=row["elapsed_ms"],
        response_body=row["response_body"],
        error=row["error"],
        created_ms=row["created_ms"],
    )


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
