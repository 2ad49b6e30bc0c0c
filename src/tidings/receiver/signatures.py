"""verify(): is this request a delivery tidings signed, and is it fresh?

Standard library only at import time. Ed25519 (Standard Webhooks ``v1a,``) and
``rsa-sha256`` (``X-WH-Signature``) need the ``cryptography`` package, imported only when a
public key meets such a signature.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from tidings.domain.signatures import (
    InvalidSecret,
    sign_hmac_body,
    sign_sha256_hex,
    sign_standard_v1,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

DEFAULT_TOLERANCE = 300
PUBLIC_KEY_PREFIX = "whpk_"
"""An Ed25519 public key: ``whpk_<base64 of the 32 raw bytes>``."""
ED25519_PREFIX = "v1a,"
PEM_PREFIX = "-----BEGIN "
"""Any PEM: an ``rsa-sha256`` subscription's public key is ``-----BEGIN PUBLIC KEY-----``."""


class WebhookVerificationError(Exception):
    """The delivery is not authentic, or is too old or too far in the future."""


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def _check_timestamp(raw: str, tolerance: int, now: float) -> int:
    try:
        timestamp = int(raw)
    except ValueError as exc:
        raise WebhookVerificationError("invalid timestamp header") from exc
    if abs(now - timestamp) > tolerance:
        raise WebhookVerificationError("timestamp outside the tolerance window")
    return timestamp


def verify(
    secret_or_secrets: str | Sequence[str],
    headers: Mapping[str, str],
    raw_body: bytes,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> None:
    """Raise WebhookVerificationError unless one of the secrets signed this delivery.

    The headers tell the scheme, first match wins:

    * ``webhook-signature`` (Standard Webhooks ``v1``, or ``v1a`` with a ``whpk_`` key);
    * ``X-WH-Signature`` (``rsa-sha256``): checked with an RSA public key PEM
      (``-----BEGIN PUBLIC KEY-----``, the subscription's ``publicKey``) given as a secret;
    * ``X-Webhook-Signature`` with ``X-Webhook-Timestamp`` (``hmac``), or without it
      (``hmac-body``: the HMAC of the body alone).

    Accepts any of several signatures in a header (secret rotation); compares in constant
    time. Public keys (``whpk_`` and PEM) check only their own scheme: anyone may know
    them, so they never serve as HMAC keys.

    ``hmac-body`` and ``rsa-sha256`` sign no timestamp, so nothing here can tell a fresh
    delivery from a replayed one (``tolerance`` does not apply): receivers of those schemes
    drop repeats of ``X-Webhook-Id`` (a ``Deduplicator``) instead.
    """
    secrets_ = [secret_or_secrets] if isinstance(secret_or_secrets, str) else secret_or_secrets
    current = time.time() if now is None else now
    standard = _header(headers, "webhook-signature")
    if standard is not None:
        _verify_standard(secrets_, headers, standard, raw_body, tolerance, current)
        return
    rsa_signature = _header(headers, "x-wh-signature")
    if rsa_signature is not None:
        _verify_rsa(secrets_, rsa_signature, raw_body)
        return
    legacy = _header(headers, "x-webhook-signature")
    if legacy is None:
        raise WebhookVerificationError("missing signature headers")
    raw_ts = _header(headers, "x-webhook-timestamp")
    timestamp = None if raw_ts is None else _check_timestamp(raw_ts, tolerance, current)
    offered = [v.strip().removeprefix("sha256=") for v in legacy.split(",")]
    for secret in secrets_:
        if _is_public(secret):
            continue
        expected = (
            sign_hmac_body(secret, raw_body)
            if timestamp is None
            else sign_sha256_hex(secret, timestamp, raw_body)
        )
        if any(_same(expected, value) for value in offered):
            return
    raise WebhookVerificationError("no matching signature")


def _is_public(secret: str) -> bool:
    return secret.startswith(PUBLIC_KEY_PREFIX) or secret.lstrip().startswith(PEM_PREFIX)


def _verify_rsa(secrets_: Sequence[str], signature_header: str, raw_body: bytes) -> None:
    """``rsa-sha256``: RSASSA-PKCS1-v1_5 with SHA-256 over the raw body, one base64 value."""
    pems = [secret for secret in secrets_ if secret.lstrip().startswith(PEM_PREFIX)]
    if not pems:
        raise WebhookVerificationError(
            "an X-WH-Signature is checked with the subscription's publicKey PEM"
        )
    signature = _b64(signature_header.strip())
    if signature is None:
        raise WebhookVerificationError("X-WH-Signature is not base64")
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    for pem in pems:
        try:
            _rsa_public_key(pem).verify(signature, raw_body, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            continue
        return
    raise WebhookVerificationError("no matching signature")


@functools.lru_cache(maxsize=256)
def _rsa_public_key(pem: str) -> RSAPublicKey:
    try:
        from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
        from cryptography.hazmat.primitives.serialization import load_pem_public_key
    except ImportError as exc:  # pragma: no cover - cryptography is a server dependency
        raise ImportError("rsa-sha256 signatures need: pip install cryptography") from exc
    try:
        key = load_pem_public_key(pem.strip().encode())
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise WebhookVerificationError("not a public key PEM (-----BEGIN PUBLIC KEY-----)") from exc
    if not isinstance(key, RSAPublicKey):
        raise WebhookVerificationError("the public key PEM is not an RSA key")
    return key


def _verify_standard(
    secrets_: Sequence[str],
    headers: Mapping[str, str],
    signature_header: str,
    raw_body: bytes,
    tolerance: int,
    now: float,
) -> None:
    msg_id = _header(headers, "webhook-id")
    raw_ts = _header(headers, "webhook-timestamp")
    if msg_id is None or raw_ts is None:
        raise WebhookVerificationError("missing webhook-id or webhook-timestamp header")
    timestamp = _check_timestamp(raw_ts, tolerance, now)
    offered = signature_header.split()
    for secret in secrets_:
        if secret.startswith(PUBLIC_KEY_PREFIX):
            if _ed25519_matches(secret, msg_id, timestamp, raw_body, offered):
                return
            continue
        if _is_public(secret):
            continue
        try:
            expected = sign_standard_v1(secret, msg_id, timestamp, raw_body)
        except InvalidSecret as exc:
            raise WebhookVerificationError(str(exc)) from exc
        if any(_same(expected, value) for value in offered):
            return
    raise WebhookVerificationError("no matching signature")


def _ed25519_matches(
    public_key: str, msg_id: str, timestamp: int, raw_body: bytes, offered: Sequence[str]
) -> bool:
    """True if one ``v1a,`` value is this key's signature of ``"{id}.{timestamp}.{body}"``."""
    signatures = [
        signature
        for value in offered
        if value.startswith(ED25519_PREFIX)
        and (signature := _b64(value[len(ED25519_PREFIX) :])) is not None
    ]
    if not signatures:
        return False  # nothing to check, so no need for the cryptography package
    key = _public_key(public_key)
    from cryptography.exceptions import InvalidSignature

    message = f"{msg_id}.{timestamp}.".encode() + raw_body
    for signature in signatures:
        try:
            key.verify(signature, message)
        except InvalidSignature:
            continue
        return True
    return False


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


@functools.lru_cache(maxsize=256)
def _public_key(public_key: str) -> Ed25519PublicKey:
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError as exc:  # pragma: no cover - cryptography is a server dependency
        raise ImportError("Ed25519 (v1a) signatures need: pip install cryptography") from exc
    raw = _b64(public_key[len(PUBLIC_KEY_PREFIX) :])
    if raw is None or len(raw) != 32:
        raise WebhookVerificationError("public key must be 'whpk_' followed by base64 of 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def _same(expected: str, offered: str) -> bool:
    """Constant-time comparison that also takes non-ASCII garbage (as bytes)."""
    return hmac.compare_digest(expected.encode(), offered.encode("utf-8", "surrogatepass"))
