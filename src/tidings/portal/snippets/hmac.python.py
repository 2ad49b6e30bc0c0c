"""tidings "hmac" subscriptions: X-Webhook-Signature = "sha256=" + hex HMAC-SHA256, keyed by
the whole signing secret string (whsec_...), over "{X-Webhook-Timestamp}.{raw body}".

Flask: ``verify_signature(request.get_data(), request.headers.get("X-Webhook-Timestamp", ""),
request.headers.get("X-Webhook-Signature", ""), SECRET)``. Also check that the timestamp is
recent, and drop repeats of X-Webhook-Id.
"""

import hashlib
import hmac


def verify_signature(payload: bytes, timestamp: str, signature: str, secret: str) -> bool:
    signed = f"{timestamp}.".encode() + payload
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), signature.encode())
