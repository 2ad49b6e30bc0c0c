"""What a receiver needs: verify a tidings delivery, and drop duplicates.

Standard library only, so a receiving app can import it without the server's
dependencies.
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from tidings.domain.signatures import InvalidSecret, sign_sha256_hex, sign_standard_v1

DEFAULT_TOLERANCE = 300


class WebhookVerificationError(Exception):
    """The delivery is not authentic, or is too old or too far in the future."""


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def _check_timestamp(raw: str, tolerance: int, now: float) -> int:
    try:
        timestamp = int(raw)
    except ValueError as exc:
        raise WebhookVerificationError("invalid timestamp header") from exc
    if abs(now - timestamp) > tolerance:
        raise WebhookVerificationError("timestamp outside the tolerance window")
    return timestamp


def verify(
    secret_or_secrets: str | Sequence[str],
    headers: Mapping[str, str],
    raw_body: bytes,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> None:
    """Raise WebhookVerificationError unless one of the secrets signed this delivery.

    Checks the Standard Webhooks headers when present, else ``X-Webhook-Signature``;
    accepts any of several signatures in a header (secret rotation); compares in
    constant time.
    """
    secrets_ = [secret_or_secrets] if isinstance(secret_or_secrets, str) else secret_or_secrets
    current = time.time() if now is None else now
    standard = _header(headers, "webhook-signature")
    if standard is not None:
        _verify_standard(secrets_, headers, standard, raw_body, tolerance, current)
        return
    legacy = _header(headers, "x-webhook-signature")
    raw_ts = _header(headers, "x-webhook-timestamp")
    if legacy is None or raw_ts is None:
        raise WebhookVerificationError("missing signature headers")
    timestamp = _check_timestamp(raw_ts, tolerance, current)
    offered = [v.strip().removeprefix("sha256=") for v in legacy.split(",")]
    for secret in secrets_:
        expected = sign_sha256_hex(secret, timestamp, raw_body)
        if any(hmac.compare_digest(expected, value) for value in offered):
            return
    raise WebhookVerificationError("no matching signature")


def _verify_standard(
    secrets_: Sequence[str],
    headers: Mapping[str, str],
    signature_header: str,
    raw_body: bytes,
    tolerance: int,
    now: float,
) -> None:
    msg_id = _header(headers, "webhook-id")
    raw_ts = _header(headers, "webhook-timestamp")
    if msg_id is None or raw_ts is None:
        raise WebhookVerificationError("missing webhook-id or webhook-timestamp header")
    timestamp = _check_timestamp(raw_ts, tolerance, now)
    offered = signature_header.split()
    for secret in secrets_:
        try:
            expected = sign_standard_v1(secret, msg_id, timestamp, raw_body)
        except InvalidSecret as exc:
            raise WebhookVerificationError(str(exc)) from exc
        if any(hmac.compare_digest(expected, value) for value in offered):
            return
    raise WebhookVerificationError("no matching signature")


class Deduplicator:
    """Remembers the last ``capacity`` event ids seen; ``first_time(id)`` is True once per id."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._seen: OrderedDict[str, None] = OrderedDict()

    def first_time(self, event_id: str) -> bool:
        if event_id in self._seen:
            self._seen.move_to_end(event_id)
            return False
        self._seen[event_id] = None
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return True
