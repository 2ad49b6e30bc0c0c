"""Verify a tidings delivery signed with ed25519 (Standard Webhooks, asymmetric).

webhook-signature holds space-separated "v1a,<base64>" Ed25519 signatures of
"{webhook-id}.{webhook-timestamp}.{raw body}"; verify with the subscription's whpk_ public
key (base64 of the raw 32-byte key). Needs ``pip install cryptography``.
"""

import base64
import binascii
import time
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

TOLERANCE_SECONDS = 300


def verify_webhook(public_key: str, headers: Mapping[str, str], raw_body: bytes) -> bool:
    """``headers`` with lower-case names; ``raw_body`` exactly as received."""
    if not public_key.startswith("whpk_"):
        return False
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key[len("whpk_") :]))
    msg_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > TOLERANCE_SECONDS:
        return False
    message = f"{msg_id}.{timestamp}.".encode() + raw_body
    for entry in headers.get("webhook-signature", "").split():
        version, _, value = entry.partition(",")
        if version != "v1a":
            continue
        try:
            key.verify(base64.b64decode(value, validate=True), message)
        except (binascii.Error, InvalidSignature):
            continue
        return True
    return False
