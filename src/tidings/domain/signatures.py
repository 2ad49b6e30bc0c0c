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

Two more dialects, for receivers written from other products' docs (``SignatureScheme``):

* ``hmac-body`` (Workestra): ``X-Webhook-Signature: sha256=<hex>``, HMAC-SHA256 keyed by
  the whole secret string (UTF-8) over the raw body alone; no timestamp is signed.
* ``rsa-sha256`` (GoHighLevel): ``X-WH-Signature: <base64>``, RSASSA-PKCS1-v1_5 with
  SHA-256 over the raw body; the key is an RSA private key (PKCS#8 PEM), receivers verify
  with its public key (SubjectPublicKeyInfo PEM).

Their receivers compare one value, so these send exactly one signature: during a
rotation the previous key signs until its grace period ends.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey


class SignatureScheme(StrEnum):
    """What a subscription's receiver checks; chosen at creation."""

    HMAC = "hmac"
    ED25519 = "ed25519"
    HMAC_BODY = "hmac-body"
    RSA_SHA256 = "rsa-sha256"

    @property
    def signs_once(self) -> bool:
        """Its header carries one signature, so a rotation cannot sign with both keys."""
        return self in (SignatureScheme.HMAC_BODY, SignatureScheme.RSA_SHA256)


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


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """Not ``hmac.digest``: CPython's one-shot lets go of the GIL on every call, and the
    dispatcher's event loop, which signs every delivery, then waits to get it back from
    the sender's thread, for up to the interpreter's switch interval (beside a thread
    running Python, a delivery's two signatures took 4,143 µs of wall time instead of 30:
    ``bench/signing.py``). ``hmac.new`` lets go only for messages of 2 KiB or more, where
    hashing takes long enough to be worth it."""
    return hmac.new(key, message, hashlib.sha256).digest()


def validate_secret(secret: str) -> str:
    secret_key_bytes(secret)
    return secret


def sign_sha256_hex(secret: str, timestamp: int, body: bytes) -> str:
    message = f"{timestamp}.".encode() + body
    return hmac_sha256(secret.encode(), message).hex()


@functools.lru_cache(maxsize=4096)
def _standard_key(secret: str) -> bytes:
    return secret_key_bytes(secret)


def sign_standard_v1(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    message = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac_sha256(_standard_key(secret), message)
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


RSA_KEY_SIZES = (2048, 3072, 4096)
RSA_PRIVATE_PEM = "-----BEGIN PRIVATE KEY-----"


def generate_rsa_key(bits: int) -> str:
    """A new RSA private key as PKCS#8 PEM (stored encrypted, like every secret). Takes
    tens of milliseconds at 2048 bits and up to seconds at 4096: call it off the loop."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    if bits not in RSA_KEY_SIZES:
        raise InvalidSecret(f"RSA keys are {', '.join(map(str, RSA_KEY_SIZES))} bits")
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()


def check_rsa_key(private_pem: str) -> str:
    """The public PEM of a private key a user brings (or tidings made), once it is known
    to be an RSA key tidings can sign with: 2048 bits or more, public exponent 65537 or
    more, usable for PKCS#1 v1.5. Checks the key's arithmetic, which holds the GIL for
    60-500 ms (2048-4096 bits, measured): call it off the event loop, once per key."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(private_pem.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidSecret("an unencrypted RSA private key in PEM is required") from exc
    if not isinstance(key, RSAPrivateKey) or key.key_size < RSA_KEY_SIZES[0]:
        raise InvalidSecret(f"an RSA private key of at least {RSA_KEY_SIZES[0]} bits is required")
    if key.public_key().public_numbers().e < 65537:
        raise InvalidSecret("the RSA key's public exponent must be at least 65537")
    try:
        key.sign(b"", padding.PKCS1v15(), hashes.SHA256())
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidSecret("the RSA key cannot make PKCS#1 v1.5 signatures") from exc
    return rsa_public_pem(private_pem)


@functools.lru_cache(maxsize=4096)
def _rsa_key(private_pem: str) -> RSAPrivateKey:
    """A stored key, loaded without checking its arithmetic again (``check_rsa_key`` did,
    when it was saved): 0.1 ms instead of 60-500 ms with the GIL held."""
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(
            private_pem.encode(), password=None, unsafe_skip_rsa_key_validation=True
        )
    except Exception as exc:
        raise InvalidSecret("not an RSA private key in PEM") from exc
    if not isinstance(key, RSAPrivateKey):
        raise InvalidSecret("not an RSA private key")
    return key


def rsa_public_pem(private_pem: str) -> str:
    """The public half, as the PEM Node's ``crypto.createVerify(...).verify`` takes."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    public = _rsa_key(private_pem).public_key()
    return public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


def sign_rsa_sha256(private_pem: str, body: bytes) -> str:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    signature = _rsa_key(private_pem).sign(body, padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


def sign_hmac_body(secret: str, body: bytes) -> str:
    return hmac_sha256(secret.encode(), body).hex()


def public_key_for(scheme: SignatureScheme, secret: str) -> str | None:
    """What receivers verify with, for the asymmetric schemes; None for shared secrets.
    Checks an RSA key whole (``check_rsa_key``): call it off the event loop."""
    if scheme is SignatureScheme.ED25519:
        return public_key_of(secret)
    if scheme is SignatureScheme.RSA_SHA256:
        return check_rsa_key(secret)
    return None


MIN_BODY_SECRET = 16
MAX_BODY_SECRET = 256


def validate_body_secret(secret: str) -> str:
    """An ``hmac-body`` secret a user brings: any printable ASCII string of 16 to 256
    characters (Workestra's are plain strings; the key is the string's UTF-8 bytes), or a
    ``whsec_`` secret."""
    if not MIN_BODY_SECRET <= len(secret) <= MAX_BODY_SECRET:
        raise InvalidSecret(
            f"signing secret must be {MIN_BODY_SECRET} to {MAX_BODY_SECRET} characters"
        )
    if not all(33 <= ord(ch) < 127 for ch in secret):
        raise InvalidSecret("signing secret must be printable ASCII without spaces")
    return secret


def signature_headers(
    secrets_: Sequence[str],
    msg_id: str,
    timestamp: int,
    body: bytes,
    scheme: SignatureScheme = SignatureScheme.HMAC,
) -> dict[str, str]:
    """The signature headers of one delivery attempt.

    ``secrets_`` are the active secrets, current first. ``hmac`` and ``ed25519`` sign
    with all of them: ``whsec_`` secrets sign both header sets, ``whsk_`` keys ``v1a``
    only. ``hmac-body`` and ``rsa-sha256`` sign once, with the oldest (the previous key
    while its grace period lasts).
    """
    if not secrets_:
        raise InvalidSecret("at least one signing secret is required")
    if scheme is SignatureScheme.HMAC_BODY:
        signature = "sha256=" + sign_hmac_body(secrets_[-1], body)
        return {"X-Webhook-Id": msg_id, "X-Webhook-Signature": signature}
    if scheme is SignatureScheme.RSA_SHA256:
        return {"X-Webhook-Id": msg_id, "X-WH-Signature": sign_rsa_sha256(secrets_[-1], body)}
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


SIGNATURE_HEADERS = frozenset(
    {
        "x-webhook-id",
        "x-webhook-timestamp",
        "x-webhook-signature",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "x-wh-signature",
    }
)
"""Every header a scheme sends (lower case): a subscription's static headers may not."""
