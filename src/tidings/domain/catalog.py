"""The event-type catalog: what events a tidings installation knows.

Each :class:`EventType` describes one canonical event: its lowercase name, a
one-sentence description, the JSON Schema (draft 2020-12) of its *payload*
object and a realistic sample payload that validates against that schema.

tidings itself defines only its operational events (:data:`BUILT_IN`); apps
(see :mod:`tidings.apps`) register their own, e.g. the reference CRM's ten.

Conventions shared by every payload:

* property names are camelCase;
* identifiers carry a type prefix (``sub_``, ``usr_``, ...);
* timestamps are ISO-8601 UTC strings ending in ``Z`` and their property
  names end in ``Utc``;
* ``additionalProperties`` is true, so host applications may add fields.

Schemas and samples are plain JSON-compatible ``dict``/``list`` values; treat
them as read-only (copy before modifying). No I/O, standard library only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "BUILT_IN",
    "Catalog",
    "DuplicateEventType",
    "EventType",
    "event_type",
]

JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"

DISABLE_REASONS: Final = ("breaker", "gone")


@dataclass(frozen=True)
class EventType:
    """One entry of the event-type catalog."""

    name: str
    """Lowercase dotted name, e.g. ``"client.created"``."""
    description: str
    """One sentence describing when the event is emitted."""
    schema: Mapping[str, Any] = field(hash=False, repr=False)
    """JSON Schema (draft 2020-12) of the payload object."""
    sample: Mapping[str, Any] = field(hash=False, repr=False)
    """A realistic sample payload that validates against :attr:`schema`."""


def event_type(
    name: str,
    description: str,
    properties: dict[str, Any],
    required: list[str],
    sample: dict[str, Any],
) -> EventType:
    """An :class:`EventType` whose payload schema is an open object (draft 2020-12)
    with these ``properties``, of which ``required`` must be present."""
    schema = {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": f"{name} payload",
        "description": description,
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": True,
    }
    return EventType(name=name, description=description, schema=schema, sample=sample)


class DuplicateEventType(ValueError):
    """Two event types (built in, or from two apps) share a name."""


class Catalog:
    """The event types of one installation: the apps' in the order registered, then
    tidings' own (:data:`BUILT_IN`); found by name case-insensitively."""

    def __init__(self, more: Iterable[EventType] = ()) -> None:
        self._by_name: dict[str, EventType] = {}
        self.register(*BUILT_IN, *more)

    def register(self, *event_types: EventType) -> None:
        for each in event_types:
            key = each.name.lower()
            if key in self._by_name:
                raise DuplicateEventType(f"event type {each.name!r} is registered twice")
            self._by_name[key] = each

    def find(self, name: str) -> EventType | None:
        return self._by_name.get(name.lower())

    def __iter__(self) -> Iterator[EventType]:
        return iter(sorted(self._by_name.values(), key=lambda each: each in BUILT_IN))

    def __len__(self) -> int:
        return len(self._by_name)


_SUBSCRIPTION_ID: Final = {"type": "string", "minLength": 1}

SUBSCRIPTION_DISABLED: Final = event_type(
    "subscription.disabled",
    (
        "Operational: tidings disabled a webhook subscription after repeated delivery failures"
        " or a 410 Gone response."
    ),
    {
        "subscriptionId": {
            **_SUBSCRIPTION_ID,
            "description": "Identifier of the disabled subscription.",
        },
        "url": {
            "type": "string",
            "format": "uri",
            "description": "Endpoint URL of the subscription.",
        },
        "reason": {
            "type": "string",
            "enum": list(DISABLE_REASONS),
            "description": (
                "Why it was disabled: breaker (too many consecutive failures)"
                " or gone (the receiver answered 410)."
            ),
        },
        "consecutiveFailures": {
            "type": "integer",
            "minimum": 0,
            "description": "Consecutive failed delivery attempts at the time it was disabled.",
        },
        "disabledUtc": {
            "type": "string",
            "format": "date-time",
            "description": "When the subscription was disabled (ISO-8601, UTC).",
        },
    },
    ["subscriptionId", "url", "reason", "consecutiveFailures", "disabledUtc"],
    {
        "subscriptionId": "sub_01KH6N2C7X5K8QTR4MW9BDZ3EV",
        "url": "https://hooks.example.com/tidings/inbound",
        "reason": "breaker",
        "consecutiveFailures": 20,
        "disabledUtc": "2026-02-11T03:41:16Z",
    },
)

ENDPOINT_VERIFY: Final = event_type(
    "endpoint.verify",
    "Operational: tidings sent a verification challenge to confirm that an endpoint is reachable.",
    {
        "subscriptionId": {
            **_SUBSCRIPTION_ID,
            "description": "Identifier of the subscription being verified.",
        },
        "challenge": {
            "type": "string",
            "minLength": 1,
            "description": (
                "Random string the endpoint may echo back to prove it received the request."
            ),
        },
    },
    ["subscriptionId", "challenge"],
    {
        "subscriptionId": "sub_01KH6N2C7X5K8QTR4MW9BDZ3EV",
        "challenge": "vfy_Q2hhbGxlbmdlLTdmM2E5YzE0",
    },
)

BUILT_IN: Final[tuple[EventType, ...]] = (SUBSCRIPTION_DISABLED, ENDPOINT_VERIFY)
"""The operational events tidings emits itself; every catalog starts with them."""
