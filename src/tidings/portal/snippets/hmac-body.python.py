"""Verify a tidings delivery signed with hmac-body (Workestra style).

X-Webhook-Signature is "sha256=" + the hex HMAC-SHA256 of the raw body alone, keyed by the
whole secret string (UTF-8). No timestamp is signed: deduplicate on X-Webhook-Id.
"""

import hashlib
import hmac
from collections.abc import Mapping


def verify_webhook(secret: str, headers: Mapping[str, str], raw_body: bytes) -> bool:
    """``headers`` with lower-case names; ``raw_body`` exactly as received."""
    expected = "sha256=" + hmac.new(secret.encode(), raw_body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers.get("x-webhook-signature", ""), expected)
