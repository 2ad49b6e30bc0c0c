"""Verify a tidings delivery signed with hmac (X-Webhook-Signature).

HMAC-SHA256 keyed by the whole secret string (UTF-8) over "{timestamp}.{raw body}";
during a rotation the header holds several comma-separated values: any may match.
"""

import hashlib
import hmac
import time
from collections.abc import Mapping

TOLERANCE_SECONDS = 300


def verify_webhook(secret: str, headers: Mapping[str, str], raw_body: bytes) -> bool:
    """``headers`` with lower-case names; ``raw_body`` exactly as received."""
    timestamp = headers.get("x-webhook-timestamp", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > TOLERANCE_SECONDS:
        return False
    message = timestamp.encode() + b"." + raw_body
    expected = "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    given = headers.get("x-webhook-signature", "").split(",")
    return any(hmac.compare_digest(value.strip(), expected) for value in given)
