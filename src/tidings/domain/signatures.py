"""Signing: one ``whsec_`` secret serves both header schemes.

* ``X-Webhook-Signature: sha256=<hex>``: HMAC-SHA256 keyed by the whole secret string
  (UTF-8) over ``"{timestamp}.{body}"`` (the seed docs' Flask and Node snippets).
* Standard Webhooks ``webhook-signature: v1,<base64>``: HMAC-SHA256 keyed by the
  base64-decoded part after ``whsec_`` over ``"{id}.{timestamp}.{body}"``.
* Asymmetric, per subscription: a ``whsk_`` signing key (base64 of a 32-byte Ed25519
  seed) signs ``"{id}.{timestamp}.{body}"`` as ``v1a,<base64>``; receivers verify with the
  ``whpk_`` public key (base64 of the raw 32-byte key) and hold no shared secret. Such a
  subscription sends no ``X-Webhook-Signature`` (that scheme is HMAC only).

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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

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


SIGNING_KEY_PREFIX = "whsk_"
PUBLIC_KEY_PREFIX = "whpk_"


def generate_signing_key() -> str:
    return SIGNING_KEY_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


@functools.lru_cache(maxsize=4096)
def _private_key(signing_key: str) -> Ed25519PrivateKey:
    # Imported here so that receivers (tidings.receiver) load this module with the
    # standard library alone.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if not signing_key.startswith(SIGNING_KEY_PREFIX):
        raise InvalidSecret("signing key must start with 'whsk_'")
    try:
        seed = base64.b64decode(signing_key[len(SIGNING_KEY_PREFIX) :], validate=True)
        return Ed25519PrivateKey.from_private_bytes(seed)
    except (binascii.Error, ValueError) as exc:
        raise InvalidSecret("signing key must be 'whsk_' + base64 of 32 bytes") from exc


def public_key_of(signing_key: str) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = _private_key(signing_key).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return PUBLIC_KEY_PREFIX + base64.b64encode(raw).decode("ascii")


def sign_standard_v1a(signing_key: str, msg_id: str, timestamp: int, body: bytes) -> str:
    message = f"{msg_id}.{timestamp}.".encode() + body
    return "v1a," + base64.b64encode(_private_key(signing_key).sign(message)).decode("ascii")


def is_asymmetric(secret: str) -> bool:
    return secret.startswith(SIGNING_KEY_PREFIX)


def signature_headers(
    secrets_: Sequence[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """Both header sets for one delivery attempt, signed by every active secret.

    ``whsec_`` secrets sign both schemes; ``whsk_`` keys sign ``v1a`` only.
    """
    if not secrets_:
        raise InvalidSecret("at least one signing secret is required")
    shared = [s for s in secrets_ if not is_asymmetric(s)]
    standard = [sign_standard_v1(s, msg_id, timestamp, body) for s in shared] + [
        sign_standard_v1a(s, msg_id, timestamp, body) for s in secrets_ if is_asymmetric(s)
    ]
    headers = {
        "X-Webhook-Id": msg_id,
        "X-Webhook-Timestamp": str(timestamp),
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(standard),
    }
    if shared:
        headers["X-Webhook-Signature"] = ",".join(
            "sha256=" + sign_sha256_hex(s, timestamp, body) for s in shared
        )
    return headers
