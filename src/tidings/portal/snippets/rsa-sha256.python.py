"""Verify a tidings delivery signed with rsa-sha256 (GoHighLevel style).

X-WH-Signature is the base64 RSASSA-PKCS1-v1_5 SHA-256 signature of the raw body; verify
it with the subscription's public key (PEM). Needs ``pip install cryptography``.
"""

import base64
import binascii
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key


def verify_webhook(public_key_pem: str, headers: Mapping[str, str], raw_body: bytes) -> bool:
    """``headers`` with lower-case names; ``raw_body`` exactly as received."""
    key = load_pem_public_key(public_key_pem.encode())
    if not isinstance(key, rsa.RSAPublicKey):
        return False
    try:
        signature = base64.b64decode(headers.get("x-wh-signature", ""), validate=True)
        key.verify(signature, raw_body, padding.PKCS1v15(), hashes.SHA256())
    except (binascii.Error, InvalidSignature):
        return False
    return True
