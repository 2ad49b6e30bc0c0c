"""tidings "ed25519" subscriptions (Standard Webhooks v1a): webhook-signature holds
"v1a,<base64 Ed25519 signature>" values (several during a key rotation) of
"{webhook-id}.{webhook-timestamp}.{raw body}"; the key is the subscription's whpk_ public
key. Needs ``pip install cryptography``.

Flask: ``verify_signature(request.get_data(), request.headers.get("webhook-id", ""),
request.headers.get("webhook-timestamp", ""), request.headers.get("webhook-signature", ""),
PUBLIC_KEY)``. Also drop repeats of webhook-id.
"""

import base64
import binascii
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

TOLERANCE_SECONDS = 300


def verify_signature(
    payload: bytes, webhook_id: str, timestamp: str, signature_header: str, public_key: str
) -> bool:
    if not (timestamp.isascii() and timestamp.isdigit()):
        return False
    if abs(time.time() - int(timestamp)) > TOLERANCE_SECONDS:
        return False
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key.removeprefix("whpk_")))
    signed = f"{webhook_id}.{timestamp}.".encode() + payload
    for value in signature_header.split():
        version, _, signature = value.partition(",")
        if version != "v1a":
            continue
        try:
            key.verify(base64.b64decode(signature, validate=True), signed)
        except (InvalidSignature, binascii.Error, ValueError):
            continue
        return True
    return False
