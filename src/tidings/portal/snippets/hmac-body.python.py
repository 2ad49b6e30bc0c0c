"""tidings "hmac-body" subscriptions: X-Webhook-Signature = "sha256=" + hex HMAC-SHA256, keyed
by the whole signing secret string (whsec_...), over the raw body alone.

Flask: ``verify_signature(request.get_data(), request.headers.get("X-Webhook-Signature", ""),
SECRET)``. Nothing signed says when it was sent: drop repeats of X-Webhook-Id.
"""

import hashlib
import hmac


def verify_signature(payload: bytes, signature: str, secret: str) -> bool:
    expected = hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
    received = signature.removeprefix("sha256=")
    return hmac.compare_digest(expected.encode(), received.encode())
