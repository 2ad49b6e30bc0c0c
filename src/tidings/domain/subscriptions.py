"""Subscriptions: who receives which events, and where."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from tidings.domain.deliveries import DisableReason
from tidings.domain.events import EventPattern
from tidings.domain.retry import RetryRules
from tidings.domain.signatures import SIGNATURE_HEADERS, SignatureScheme

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
    """Until then the secret replaced by the last rotation signs too (for schemes that
    send one signature: instead of the new one)."""
    previous_public_key: str | None = None
    """The public key of that secret, for the asymmetric schemes."""
    ordering: Ordering | None = None
    signature_scheme: SignatureScheme = SignatureScheme.HMAC
    retry: RetryRules | None = None
    """The subscription's own ``retryPolicy``; None: the instance's."""
    header_names: tuple[str, ...] = ()
    """Names of its static headers (their values are stored encrypted, never shown)."""
    propagate_trace: bool = False
    """Send a W3C ``traceparent`` header with each delivery (``propagateTrace``)."""
    filter: Mapping[str, Any] | None = None
    """Its ``filter`` (``domain/filters.py``): events that fail it get no delivery."""
    transformation: str | None = None
    """Its JavaScript ``transformation`` (``tidings.transform``): run on every delivery
    before it is signed."""

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


MAX_STATIC_HEADERS = 20
MAX_HEADER_NAME = 128
MAX_HEADER_VALUE = 4096
MAX_HEADERS_SIZE = 8192
"""Bytes of all names and values together: they travel with every claimed delivery."""
RESERVED_HEADERS = SIGNATURE_HEADERS | {
    "host",
    "content-length",
    "content-type",
    "user-agent",
    "traceparent",
    "tracestate",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "proxy-authorization",
    "proxy-connection",
}
"""Names a subscription's static headers may not use (lower case): what tidings sends
itself, and what would change how the request is framed or sent (``Expect`` would make
curl wait for a ``100 Continue``)."""
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class InvalidHeaders(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def validate_static_headers(raw: Mapping[str, Any]) -> dict[str, str]:
    """A subscription's ``headers``: valid HTTP names (RFC 9110 tokens), none reserved or
    given twice (case-insensitively), values printable on one line and not blank (curl
    reads ``Name:`` as "remove this header"), small in all."""
    if len(raw) > MAX_STATIC_HEADERS:
        raise InvalidHeaders("headers", f"at most {MAX_STATIC_HEADERS} headers")
    seen: set[str] = set()
    size = 0
    for name, value in raw.items():
        field = f"headers.{str(name)[:MAX_HEADER_NAME]}"
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise InvalidHeaders(field, "not a valid header name")
        if len(name) > MAX_HEADER_NAME:
            raise InvalidHeaders(field, f"names are at most {MAX_HEADER_NAME} characters")
        lowered = name.lower()
        if lowered in RESERVED_HEADERS:
            raise InvalidHeaders(field, "tidings sets this header itself")
        if lowered in seen:
            raise InvalidHeaders(field, "given twice")
        seen.add(lowered)
        if not isinstance(value, str):
            raise InvalidHeaders(field, "must be a string")
        if len(value) > MAX_HEADER_VALUE:
            raise InvalidHeaders(field, f"at most {MAX_HEADER_VALUE} characters")
        if any(not 32 <= ord(ch) < 127 and ch != "\t" for ch in value):
            raise InvalidHeaders(field, "must be printable ASCII on one line")
        if not value.strip():
            raise InvalidHeaders(field, "must not be empty")
        size += len(name) + len(value)
    if size > MAX_HEADERS_SIZE:
        raise InvalidHeaders("headers", f"at most {MAX_HEADERS_SIZE} characters in all")
    return dict(raw)
