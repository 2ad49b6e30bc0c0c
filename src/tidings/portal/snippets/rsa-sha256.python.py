"""tidings "rsa-sha256" subscriptions: X-WH-Signature = base64 RSASSA-PKCS1-v1_5 SHA-256
signature of the raw body; the key is the subscription's public key PEM
(-----BEGIN PUBLIC KEY-----). Needs ``pip install cryptography``.

Flask: ``verify_signature(request.get_data(), request.headers.get("X-WH-Signature", ""),
PUBLIC_KEY)``. Nothing signed says when it was sent: drop repeats of X-Webhook-Id.
"""

import base64
import binascii

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key


def verify_signature(payload: bytes, signature: str, public_key_pem: str) -> bool:
    key = load_pem_public_key(public_key_pem.encode())
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, payload, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True
