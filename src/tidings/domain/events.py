"""Events, their envelope, and the event-type patterns subscriptions use."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tidings.domain.clock import now_ms
from tidings.domain.ids import new_id
from tidings.domain.js_json import compact_json

MAX_EVENT_TYPE_LENGTH = 128
_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)+")
_PREFIX_PATTERN = re.compile(r"(?P<prefix>[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*)\.\*")


class InvalidEventType(ValueError):
    """An event type or subscription pattern that breaks the naming rules."""


def normalize_event_type(raw: str) -> str:
    """Event types are case-insensitive: stored and compared in lowercase."""
    name = raw.strip().lower()
    if len(name) > MAX_EVENT_TYPE_LENGTH or not _EVENT_TYPE.fullmatch(name):
        raise InvalidEventType(
            f"invalid event type {raw!r}: use two or more dot-separated words "
            "such as 'client.created' (letters, digits, '_' and '-')"
        )
    return name


@dataclass(frozen=True)
class EventPattern:
    """What a subscription listens to: ``*``, a prefix such as ``client.*``, or one type."""

    text: str

    @classmethod
    def parse(cls, raw: str) -> EventPattern:
        text = raw.strip().lower()
        if text == "*":
            return cls("*")
        if len(text) <= MAX_EVENT_TYPE_LENGTH and _PREFIX_PATTERN.fullmatch(text):
            return cls(text)
        if "*" in text:
            raise InvalidEventType(
                f"invalid event type pattern {raw!r}: a wildcard may only be the whole "
                "pattern ('*') or its last segment ('client.*')"
            )
        return cls(normalize_event_type(text))

    @property
    def is_wildcard(self) -> bool:
        return self.text.endswith("*")

    def matches(self, event_type: str) -> bool:
        if self.text == "*":
            return True
        if self.text.endswith(".*"):
            return event_type.startswith(self.text[:-1])
        return event_type == self.text


def matches_any(patterns: Iterable[str], event_type: str) -> bool:
    return any(EventPattern.parse(p).matches(event_type) for p in patterns)


def format_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_from_ms(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC)


@dataclass(frozen=True)
class Envelope:
    """The delivered body: the same bytes on every attempt, and the dedup key is ``id``."""

    id: str
    type: str
    created_ms: int
    company_id: str
    payload: Mapping[str, Any]
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def new(
        cls,
        event_type: str,
        company_id: str,
        payload: Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
    ) -> Envelope:
        """An envelope created now, with a fresh time-ordered ``evt_`` id."""
        created_ms = now_ms()
        return cls(
            new_id("evt", created_ms),
            event_type,
            created_ms,
            company_id,
            payload,
            dict(metadata or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "createdUtc": format_utc(utc_from_ms(self.created_ms)),
            "companyId": self.company_id,
            "payload": self.payload,
            "metadata": self.metadata,
        }

    def to_json(self) -> str:
        """The body as JavaScript's ``JSON.stringify(JSON.parse(body))`` prints it, so a
        receiver that verifies a re-serialized body gets the bytes that were signed."""
        return compact_json(self.to_dict())
