"""verify() for the other products' dialects: ``hmac-body`` (Workestra: ``X-Webhook-Signature``
without a timestamp) and ``rsa-sha256`` (GoHighLevel: ``X-WH-Signature`` checked with the
subscription's public key PEM); and the framework adapters taking them."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.receiver_adapters import ADAPTERS, Adapter
from tests.unit.test_receiver_support import SECRET, Recorder, envelope, expected_event, tampered
from tidings.domain.signatures import (
    SignatureScheme,
    generate_rsa_key,
    generate_secret,
    rsa_public_pem,
    sign_sha256_hex,
    signature_headers,
)
from tidings.receiver import WebhookVerificationError, verify

TS = 1_700_000_000
BODY = '{"id":"evt_1","name":"Zoë","n":42,"nested":{"a":[1,"b"]}}'.encode()
HMAC_BODY = SignatureScheme.HMAC_BODY
RSA = SignatureScheme.RSA_SHA256


@functools.cache
def _rsa_key(name: str) -> str:
    return generate_rsa_key(2048)


def rsa_private(name: str = "a") -> str:
    """One 2048-bit key per name for the whole module (making one takes tens of ms)."""
    return _rsa_key(name)


def rsa_public(name: str = "a") -> str:
    return rsa_public_pem(rsa_private(name))


def delivery(secret: str, scheme: SignatureScheme, body: bytes = BODY) -> dict[str, str]:
    """The headers tidings sends for ``body``, as the dispatcher signs them."""
    return signature_headers([secret], "evt_1", TS, body, scheme)


def ed25519_public_pem() -> str:
    key = Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


# --- rsa-sha256 ----------------------------------------------------------------------------


def test_rsa_delivery_verifies_with_the_public_key_pem() -> None:
    headers = delivery(rsa_private(), RSA)
    assert set(headers) == {"X-Webhook-Id", "X-WH-Signature"}
    verify(rsa_public(), headers, BODY)
    verify(rsa_public(), {k.lower(): v for k, v in headers.items()}, BODY)
    verify(" \n" + rsa_public() + "\n", headers, BODY)  # pasted with stray whitespace


def test_rsa_has_no_freshness_check() -> None:
    """Nothing signed says when: any ``now`` passes (receivers deduplicate instead)."""
    verify(rsa_public(), delivery(rsa_private(), RSA), BODY, now=TS + 10**9)


def test_rsa_tampered_body_and_wrong_key_fail() -> None:
    headers = delivery(rsa_private(), RSA)
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(rsa_public(), headers, BODY.replace(b"42", b"43"))
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(rsa_public(), headers, BODY + b" ")
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(rsa_public("b"), headers, BODY)


def test_rsa_during_a_rotation_either_key_may_have_signed() -> None:
    old, new = rsa_public("a"), rsa_public("b")
    verify([new, old], delivery(rsa_private("a"), RSA), BODY)
    verify([new, old], delivery(rsa_private("b"), RSA), BODY)
    with pytest.raises(WebhookVerificationError):
        verify([new], delivery(rsa_private("a"), RSA), BODY)


@pytest.mark.parametrize(
    "key",
    [SECRET, "whpk_" + base64.b64encode(b"k" * 32).decode(), "shared-secret"],
    ids=["whsec", "whpk", "plain"],
)
def test_rsa_signature_needs_a_pem(key: str) -> None:
    with pytest.raises(WebhookVerificationError, match="publicKey PEM"):
        verify(key, delivery(rsa_private(), RSA), BODY)


def test_rsa_signature_forged_as_an_hmac_keyed_by_a_secret_fails() -> None:
    """A whsec_ secret given beside the PEM is not used for X-WH-Signature either."""
    digest = hmac.digest(SECRET.encode(), BODY, hashlib.sha256)
    forged = {"X-WH-Signature": base64.b64encode(digest).decode()}
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify([SECRET, rsa_public()], forged, BODY)


@pytest.mark.parametrize(
    "pem",
    [
        "-----BEGIN PUBLIC KEY-----\nbm9wZQ==\n-----END PUBLIC KEY-----\n",
        "-----BEGIN PUBLIC KEY-----",
        "-----BEGIN PUBLIC KEY-----\n\u00e9\n-----END PUBLIC KEY-----\n",
        "private",
        "ed25519",
    ],
    ids=["garbage", "truncated", "non-ascii", "private-key-pem", "not-rsa"],
)
def test_a_pem_that_is_no_rsa_public_key_is_a_verification_error(pem: str) -> None:
    if pem == "private":
        pem = rsa_private()
    elif pem == "ed25519":
        pem = ed25519_public_pem()
    with pytest.raises(WebhookVerificationError, match=r"PEM|RSA"):
        verify(pem, delivery(rsa_private(), RSA), BODY)


# --- hmac-body -----------------------------------------------------------------------------


def test_hmac_body_delivery_verifies_with_the_secret() -> None:
    secret = generate_secret()
    headers = delivery(secret, HMAC_BODY)
    assert set(headers) == {"X-Webhook-Id", "X-Webhook-Signature"}
    expected = hmac.new(secret.encode(), BODY, hashlib.sha256).hexdigest()
    assert headers["X-Webhook-Signature"] == "sha256=" + expected
    verify(secret, headers, BODY, now=TS + 10**9)  # no timestamp: no freshness check
    verify([generate_secret(), secret], headers, BODY)


def test_hmac_body_tampered_body_and_wrong_secret_fail() -> None:
    secret = generate_secret()
    headers = delivery(secret, HMAC_BODY)
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(secret, headers, BODY.replace(b"42", b"43"))
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(generate_secret(), headers, BODY)


def test_a_timestamped_signature_without_its_timestamp_does_not_pass() -> None:
    """Dropping X-Webhook-Timestamp from an ``hmac`` delivery (to dodge the tolerance
    window) leaves a signature of ``"{ts}.{body}"``, which the body alone does not match."""
    secret = generate_secret()
    headers = signature_headers([secret], "evt_1", TS, BODY)
    legacy = {"X-Webhook-Signature": headers["X-Webhook-Signature"]}
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(secret, legacy, BODY)


@pytest.mark.parametrize("scheme", [HMAC_BODY, SignatureScheme.HMAC])
def test_a_pem_is_never_used_as_an_hmac_key(scheme: SignatureScheme) -> None:
    """Anyone may know the PEM: an HMAC keyed by it passes neither hmac scheme."""
    pem = rsa_public()
    # what a forger holding only the public key can make:
    if scheme is HMAC_BODY:
        forged = delivery(pem, scheme)
    else:
        signature = "sha256=" + sign_sha256_hex(pem, TS, BODY)
        forged = {"X-Webhook-Timestamp": str(TS), "X-Webhook-Signature": signature}
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(pem, forged, BODY, now=TS)
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify("\n" + pem, forged, BODY, now=TS)


def test_a_pem_beside_a_secret_does_not_stop_the_secret_from_matching() -> None:
    secret = generate_secret()
    verify([rsa_public(), secret], delivery(secret, HMAC_BODY), BODY)
    verify([rsa_public(), secret], signature_headers([secret], "m", TS, BODY), BODY, now=TS)


def test_hmac_body_needs_no_third_party_module() -> None:
    secret = generate_secret()
    headers = delivery(secret, HMAC_BODY)
    code = (
        "import sys\n"
        "from tidings.receiver import verify\n"
        f"verify([{rsa_public()!r}, {secret!r}], {headers!r}, {BODY!r})\n"
        "assert 'cryptography' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- garbage never raises anything but WebhookVerificationError ----------------------------


GARBAGE_VALUES = [
    "",
    " ",
    "sha256=",
    "sha256=zz",
    "!!!",
    "\u00e9\u00e9",
    "\ud800",
    ",,,",
    "A" * 344,
    "A" * 100_000,
    base64.b64encode(b"\x00" * 256).decode(),
    base64.b64encode(b"\xff" * 512).decode(),
]


@pytest.mark.parametrize("value", GARBAGE_VALUES, ids=range(len(GARBAGE_VALUES)))
@pytest.mark.parametrize("header", ["X-WH-Signature", "X-Webhook-Signature"])
def test_garbage_signature_headers_are_verification_errors(header: str, value: str) -> None:
    for keys in ([rsa_public()], [SECRET], [rsa_public(), SECRET, ed25519_public_pem()]):
        with pytest.raises(WebhookVerificationError):
            verify(keys, {header: value, "X-Webhook-Id": value}, BODY)


header_names = st.sampled_from(
    ["X-WH-Signature", "X-Webhook-Signature", "X-Webhook-Timestamp", "X-Webhook-Id", "x-other"]
)


@settings(max_examples=200, deadline=None)
@given(
    headers=st.dictionaries(header_names, st.text(max_size=400), max_size=5),
    body=st.binary(max_size=200),
    keys=st.lists(st.sampled_from(["pem", "secret", "whpk", "junk-pem"]), min_size=1),
)
def test_any_headers_and_keys_fail_only_as_verification_errors(
    headers: dict[str, str], body: bytes, keys: list[str]
) -> None:
    chosen = {
        "pem": rsa_public(),
        "secret": SECRET,
        "whpk": "whpk_" + base64.b64encode(b"k" * 32).decode(),
        "junk-pem": "-----BEGIN PUBLIC KEY-----\nxx",
    }
    with pytest.raises(WebhookVerificationError):
        verify([chosen[k] for k in keys], headers, body, now=TS)


# --- the framework adapters pass the new schemes through -----------------------------------


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
@pytest.mark.parametrize("scheme", [RSA, HMAC_BODY])
def test_adapters_accept_the_new_schemes(adapter: Adapter, scheme: SignatureScheme) -> None:
    recorder = Recorder()
    body = envelope()
    key = rsa_private() if scheme is RSA else SECRET
    headers = {**delivery(key, scheme, body), "Content-Type": "application/json"}
    with adapter.site(recorder, secrets=[rsa_public(), SECRET]) as site:
        bad = site.post(tampered(body), headers)
        good = site.post(body, headers)
    assert (bad.status, bad.json()["error"]) == (401, "invalid_signature")
    assert (good.status, good.json()) == (202, {"status": "accepted", "id": "evt_1"})
    assert recorder.events == [expected_event()]
