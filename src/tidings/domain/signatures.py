"""Signing: one ``whsec_`` secret serves both header schemes.

* ``X-Webhook-Signature: sha256=<hex>``: HMAC-SHA256 keyed by the whole secret string
  (UTF-8) over ``"{timestamp}.{body}"`` (the seed docs' Flask and Node snippets).
* Standard Webhooks ``webhook-signature: v1,<base64>``: HMAC-SHA256 keyed by the
  base64-decoded part after ``whsec_`` over ``"{id}.{timestamp}.{body}"``.

During a secret rotation every active secret signs; the values are joined (",") for
the first scheme and space-separated for the second.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
GENERATED_SECRET_BYTES = 32


class InvalidSecret(ValueError):
    """A signing secret not of the form ``whsec_<base64 of 24-64 bytes>``."""


def generate_secret() -> str:
    raw = secrets.token_bytes(GENERATED_SECRET_BYTES)
    return SECRET_PREFIX + base64.b64encode(raw).decode("ascii")


def secret_key_bytes(secret: str) -> bytes:
    """The HMAC key of the Standard Webhooks scheme; raises InvalidSecret."""
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidSecret("signing secret must start with 'whsec_'")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidSecret("signing secret must be 'whsec_' followed by base64") from exc
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise InvalidSecret(
            f"signing secret must encode {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes"
        )
    return key


def validate_secret(secret: str) -> str:
    secret_key_bytes(secret)
    return secret


def sign_sha256_hex(secret: str, timestamp: int, body: bytes) -> str:
    message = f"{timestamp}.".encode() + body
    return hmac.digest(secret.encode(), message, hashlib.sha256).hex()


@functools.lru_cache(maxsize=4096)
def _standard_key(secret: str) -> bytes:
    return secret_key_bytes(secret)


def sign_standard_v1(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    message = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.digest(_standard_key(secret), message, hashlib.sha256)
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_headers(
    secrets_: Sequence[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """Both header sets for one delivery attempt, signed by every active secret."""
    if not secrets_:
        raise InvalidSecret("at least one signing secret is required")
    hex_values = ",".join("sha256=" + sign_sha256_hex(s, timestamp, body) for s in secrets_)
    v1_values = " ".join(sign_standard_v1(s, msg_id, timestamp, body) for s in secrets_)
    return {
        "X-Webhook-Id": msg_id,
        "X-Webhook-Timestamp": str(timestamp),
        "X-Webhook-Signature": hex_values,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": v1_values,
    }
