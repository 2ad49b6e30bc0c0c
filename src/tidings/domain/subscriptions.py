"""Subscriptions: who receives which events, and where."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from tidings.domain.deliveries import DisableReason
from tidings.domain.events import EventPattern

MAX_URL_LENGTH = 2048
MAX_PATTERNS = 100


class InvalidUrl(ValueError):
    """A subscription URL that may not receive deliveries."""


class Ordering(StrEnum):
    FIFO = "fifo"
    """The events of one ordering key arrive one at a time, in the order they were emitted."""


class SubscriptionKind(StrEnum):
    WEBHOOK = "webhook"
    REST_HOOK = "rest_hook"


@dataclass(frozen=True)
class Subscription:
    id: str
    tenant_id: str
    url: str
    event_types: tuple[str, ...]
    enabled: bool
    description: str | None
    kind: SubscriptionKind
    disabled_reason: DisableReason | None
    consecutive_failures: int
    created_ms: int
    updated_ms: int
    max_concurrency: int | None = None
    """Deliveries in flight at once, over every worker (None: as the scheduler decides)."""
    rate_limit: float | None = None
    """Deliveries started per second, over every worker (None: unlimited)."""
    public_key: str | None = None
    """``whpk_`` key receivers verify with, for subscriptions signed with Ed25519."""
    previous_secret_expires_ms: int | None = None
    """Until then the secret replaced by the last rotation signs too."""
    ordering: Ordering | None = None

    def wants(self, event_type: str) -> bool:
        return any(EventPattern.parse(p).matches(event_type) for p in self.event_types)


def normalize_patterns(raw: Sequence[str]) -> tuple[str, ...]:
    """Parse, lowercase and de-duplicate patterns, keeping their order."""
    if not raw:
        raise ValueError("eventTypes must list at least one event type or pattern")
    if len(raw) > MAX_PATTERNS:
        raise ValueError(f"eventTypes may list at most {MAX_PATTERNS} patterns")
    return tuple(dict.fromkeys(EventPattern.parse(p).text for p in raw))


def validate_url_shape(url: str, allow_http: bool) -> str:
    """Absolute http(s) URL with a host and no credentials; https only unless allowed.

    Address checks (private ranges, rebinding) happen against resolved addresses
    elsewhere; this is the syntactic gate.
    """
    if len(url) > MAX_URL_LENGTH:
        raise InvalidUrl(f"url is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise InvalidUrl("url must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidUrl(f"url is not a valid URL: {exc}") from exc
    allowed = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in allowed:
        raise InvalidUrl(
            "url must be an absolute https URL"
            if not allow_http
            else "url must be an absolute http or https URL"
        )
    if not parts.hostname:
        raise InvalidUrl("url must include a host")
    if parts.username is not None or parts.password is not None:
        raise InvalidUrl("url must not embed credentials")
    if port == 0:
        raise InvalidUrl("url port must be between 1 and 65535")
    return url
