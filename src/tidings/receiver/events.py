"""The delivered envelope as a typed value for the receiver's own code."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

T = TypeVar("T")


class InvalidEvent(ValueError):
    """A verified body that is not a tidings envelope."""


@dataclass(frozen=True, slots=True)
class Event:
    """One delivered event. ``id`` is the deduplication key: every attempt repeats it."""

    id: str
    type: str
    created_utc: datetime
    company_id: str
    payload: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw_body: bytes | str) -> Event:
        """Parse the envelope JSON; raises InvalidEvent."""
        try:
            data = json.loads(raw_body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidEvent("body is not JSON") from exc
        if not isinstance(data, dict):
            raise InvalidEvent("body is not a JSON object")
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        """Build from the envelope's JSON fields (camelCase); unknown fields are ignored."""
        return cls(
            id=_field(data, "id", str),
            type=_field(data, "type", str),
            created_utc=_parse_utc(_field(data, "createdUtc", str)),
            company_id=_field(data, "companyId", str),
            payload=_field(data, "payload", dict),
            metadata=_field(data, "metadata", dict) if "metadata" in data else {},
        )


def _field(data: Mapping[str, Any], name: str, kind: type[T]) -> T:
    value = data.get(name)
    if not isinstance(value, kind):
        raise InvalidEvent(f"envelope field {name!r} must be a {kind.__name__}")
    return value


def _parse_utc(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidEvent("envelope field 'createdUtc' is not an ISO 8601 time") from exc
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
