"""Signatures: the published Standard Webhooks vector, the seed algorithm, and verify()."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from tests.support.snippets import python_verifier
from tidings.domain.signatures import (
    InvalidSecret,
    SignatureScheme,
    generate_rsa_key,
    generate_secret,
    rsa_public_pem,
    sign_sha256_hex,
    sign_standard_v1,
    signature_headers,
    validate_secret,
)
from tidings.domain.subscriptions import InvalidHeaders, validate_static_headers
from tidings.receiver import Deduplicator, WebhookVerificationError, verify

VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_standard_webhooks_published_vector() -> None:
    assert sign_standard_v1(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIGNATURE


def seed_docs_verify(secret: str, timestamp: str, signature: str, raw_body: bytes) -> bool:
    """The seed docs' Flask snippet: the ``hmac`` snippet the portal shows."""
    return python_verifier("hmac")(raw_body, timestamp, signature, secret)


def test_headers_match_seed_algorithm_and_standard_library() -> None:
    secret = generate_secret()
    body = json.dumps({"id": "evt_1", "type": "client.created"}).encode()
    now = int(time.time())
    headers = signature_headers([secret], "evt_1", now, body)
    assert seed_docs_verify(secret, str(now), headers["X-Webhook-Signature"], body)
    assert not seed_docs_verify(secret, str(now + 1), headers["X-Webhook-Signature"], body)
    assert headers["X-Webhook-Timestamp"] == headers["webhook-timestamp"] == str(now)
    assert Webhook(secret).verify(body, headers) == {"id": "evt_1", "type": "client.created"}


def test_rotation_signs_with_every_secret() -> None:
    old, new = generate_secret(), generate_secret()
    body = b"{}"
    headers = signature_headers([new, old], "evt_2", 1_700_000_000, body)
    assert headers["X-Webhook-Signature"].count("sha256=") == 2
    assert len(headers["webhook-signature"].split()) == 2
    for secret in (old, new):
        verify(secret, headers, body, now=1_700_000_000)
        verify(
            secret,
            {k: v for k, v in headers.items() if k.startswith("X-")},
            body,
            now=1_700_000_000,
        )


@pytest.mark.parametrize("bad", ["", "whsec_", "sk_abc", "whsec_!!!!", "whsec_" + "A" * 8])
def test_malformed_secrets_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidSecret):
        validate_secret(bad)


def test_generated_secret_has_standard_form() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert 24 <= len(base64.b64decode(secret[6:])) <= 64


def test_verify_rejects_tampering_staleness_and_wrong_secret() -> None:
    secret = generate_secret()
    body = b'{"a":1}'
    headers = signature_headers([secret], "evt_3", 1_700_000_000, body)
    verify(secret, headers, body, now=1_700_000_100)
    with pytest.raises(WebhookVerificationError):
        verify(secret, headers, b'{"a":2}', now=1_700_000_100)
    with pytest.raises(WebhookVerificationError):
        verify(secret, headers, body, now=1_700_000_301)
    with pytest.raises(WebhookVerificationError):
        verify(secret, headers, body, now=1_699_999_000)
    with pytest.raises(WebhookVerificationError):
        verify(generate_secret(), headers, body, now=1_700_000_000)
    with pytest.raises(WebhookVerificationError):
        verify(secret, {}, body, now=1_700_000_000)
    legacy_only = {k: v for k, v in headers.items() if k.startswith("X-")}
    with pytest.raises(WebhookVerificationError):
        verify(secret, legacy_only, body + b" ", now=1_700_000_000)


@given(
    body=st.binary(max_size=512),
    ts=st.integers(0, 2**40),
    msg_id=st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40
    ),
)
def test_own_signatures_always_verify(body: bytes, ts: int, msg_id: str) -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    headers = signature_headers([secret], msg_id, ts, body)
    verify(secret, headers, body, now=ts)
    assert headers["X-Webhook-Signature"] == "sha256=" + sign_sha256_hex(secret, ts, body)


@given(
    garbage=st.dictionaries(
        st.sampled_from(
            [
                "webhook-id",
                "webhook-timestamp",
                "webhook-signature",
                "X-Webhook-Signature",
                "X-Webhook-Timestamp",
            ]
        ),
        st.text(max_size=80),
    )
)
def test_verify_never_accepts_garbage_headers(garbage: dict[str, str]) -> None:
    with pytest.raises(WebhookVerificationError):
        verify(generate_secret(), garbage, b"{}", now=0)


def test_deduplicator_sees_each_id_once_and_forgets_oldest() -> None:
    dedup = Deduplicator(capacity=2)
    assert dedup.first_time("a") and not dedup.first_time("a")
    assert dedup.first_time("b") and dedup.first_time("c")
    assert dedup.first_time("a"), "a was evicted by capacity"


def test_hmac_body_signs_the_raw_body_with_one_value_from_the_oldest_secret() -> None:
    """Workestra's check, ``hmac.new(secret, payload, sha256).hexdigest()``, by hand."""
    new, old = generate_secret(), generate_secret()
    body = b'{"a":1}'
    headers = signature_headers([new, old], "evt_9", 1, body, SignatureScheme.HMAC_BODY)
    expected = hmac.new(old.encode(), body, hashlib.sha256).hexdigest()
    assert headers == {"X-Webhook-Id": "evt_9", "X-Webhook-Signature": f"sha256={expected}"}


def test_rsa_signs_once_with_the_key_whose_public_pem_verifies() -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = generate_rsa_key(2048)
    body = '{"name":"Zoë"}'.encode()
    headers = signature_headers([key], "evt_r", 1, body, SignatureScheme.RSA_SHA256)
    assert set(headers) == {"X-Webhook-Id", "X-WH-Signature"}
    public = serialization.load_pem_public_key(rsa_public_pem(key).encode())
    assert isinstance(public, rsa.RSAPublicKey)
    signature = base64.b64decode(headers["X-WH-Signature"])
    public.verify(signature, body, padding.PKCS1v15(), hashes.SHA256())
    with pytest.raises(InvalidSignature):
        public.verify(signature, body + b"x", padding.PKCS1v15(), hashes.SHA256())


@pytest.mark.parametrize("bad", ["", "not a pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n"])
def test_what_is_not_an_rsa_key_is_refused(bad: str) -> None:
    with pytest.raises(InvalidSecret):
        rsa_public_pem(bad)
    with pytest.raises(InvalidSecret):
        generate_rsa_key(1024)


@pytest.mark.parametrize(
    ("headers", "field"),
    [
        ({"webhook-signature": "x"}, "headers.webhook-signature"),
        ({"Host": "evil"}, "headers.Host"),
        ({"Tracestate": "x"}, "headers.Tracestate"),
        ({"X-A": "line\r\nInjected: 1"}, "headers.X-A"),
        ({"X-A": "é"}, "headers.X-A"),
        ({"X-A": "1", "x-a": "2"}, "headers.x-a"),
        ({"(bad)": "1"}, "headers.(bad)"),
        ({f"X-{n}": "1" for n in range(21)}, "headers"),
    ],
)
def test_static_headers_refuse_what_would_forge_or_break_a_request(
    headers: dict[str, str], field: str
) -> None:
    with pytest.raises(InvalidHeaders) as caught:
        validate_static_headers(headers)
    assert caught.value.field == field


def test_static_headers_keep_what_a_gateway_needs() -> None:
    given_ = {"Authorization": "Bearer abc.def", "X-Api-Version": "2\t1"}
    assert validate_static_headers(given_) == given_
