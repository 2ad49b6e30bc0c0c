"""Subscription dialects end to end, through the in-process dispatcher to a real receiver:
the hmac-body and rsa-sha256 signature schemes (one signature, even while a rotation's
grace period lasts), a subscription's own retry policy, and its static headers.

The seed products' own verification snippets run against real deliveries in
tests/e2e; here the headers are checked with the standard library and ``cryptography``.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.conftest import Api, eventually
from tests.support.receiver import Receiver

pytestmark = pytest.mark.asyncio

SUBSCRIPTIONS = "/api/v1/webhooks/subscriptions"


async def create(api: Api, auth: dict[str, str], **body: Any) -> dict[str, Any]:
    response = await api.client.post(
        SUBSCRIPTIONS, json={"eventTypes": ["client.created"], **body}, headers=auth
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def emit(api: Api, headers: dict[str, str], n: int = 0) -> str:
    body = {"type": "client.created", "payload": {"n": n, "name": "Zoë"}}
    response = await api.client.post("/api/v1/events", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["id"]  # type: ignore[no-any-return]


async def attempts(api: Api, headers: dict[str, str], event_id: str) -> list[dict[str, Any]]:
    response = await api.client.get(f"/api/v1/events/{event_id}/deliveries", headers=headers)
    return response.json()  # type: ignore[no-any-return]


def body_hmac(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def rsa_valid(public_pem: str, signature_b64: str, body: bytes) -> bool:
    import base64

    from cryptography.exceptions import InvalidSignature

    key = serialization.load_pem_public_key(public_pem.encode())
    assert isinstance(key, rsa.RSAPublicKey)
    try:
        key.verify(base64.b64decode(signature_b64), body, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


async def test_hmac_body_signs_the_body_alone_with_one_signature(
    api: Api, receiver: Receiver
) -> None:
    headers = await api.key()
    sub = await create(api, headers, url=receiver.url("/body"), signatureScheme="hmac-body")
    assert sub["signatureScheme"] == "hmac-body" and sub["publicKey"] is None
    event_id = await emit(api, headers)
    [got] = await receiver.wait_count("/body", 1)
    assert got.headers["X-Webhook-Signature"] == body_hmac(sub["signingSecret"], got.body)
    assert got.headers["X-Webhook-Id"] == event_id
    sent = {name.lower() for name in got.headers}
    assert not sent & {"x-webhook-timestamp", "webhook-signature", "x-wh-signature"}


async def test_rsa_sha256_signs_with_a_key_whose_public_half_is_on_the_subscription(
    api: Api, receiver: Receiver
) -> None:
    headers = await api.key()
    sub = await create(api, headers, url=receiver.url("/rsa"), signatureScheme="rsa-sha256")
    assert sub["signingSecret"] is None, "the private key never leaves tidings"
    assert sub["publicKey"].startswith("-----BEGIN PUBLIC KEY-----")
    key = serialization.load_pem_public_key(sub["publicKey"].encode())
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048
    await emit(api, headers)
    [got] = await receiver.wait_count("/rsa", 1)
    assert rsa_valid(sub["publicKey"], got.headers["X-WH-Signature"], got.body)
    assert not rsa_valid(sub["publicKey"], got.headers["X-WH-Signature"], got.body + b" ")
    assert "X-Webhook-Signature" not in got.headers and "webhook-signature" not in got.headers


def private_pem(key: rsa.RSAPrivateKey, form: serialization.PrivateFormat) -> str:
    encoded = key.private_bytes(serialization.Encoding.PEM, form, serialization.NoEncryption())
    return encoded.decode()


async def test_a_brought_rsa_key_signs_and_is_never_echoed(api: Api, receiver: Receiver) -> None:
    own = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private_pem(own, serialization.PrivateFormat.TraditionalOpenSSL)
    headers = await api.key()
    sub = await create(
        api, headers, url=receiver.url("/own"), signatureScheme="rsa-sha256", signingSecret=pem
    )
    public = own.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert sub["publicKey"] == public.decode() and sub["signingSecret"] is None
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    weak = private_pem(small, serialization.PrivateFormat.PKCS8)
    body = {"url": receiver.url("/x"), "eventTypes": ["client.created"]}
    refused = await api.client.post(
        SUBSCRIPTIONS,
        json={**body, "signatureScheme": "rsa-sha256", "signingSecret": weak},
        headers=headers,
    )
    assert refused.status_code == 422 and "2048" in refused.text


async def test_a_single_signature_scheme_keeps_the_old_key_until_the_rotation_ends(
    api: Api, receiver: Receiver
) -> None:
    headers = await api.key()
    sub = await create(api, headers, url=receiver.url("/rot"), signatureScheme="hmac-body")
    old = sub["signingSecret"]
    rotated = await api.client.post(f"{SUBSCRIPTIONS}/{sub['id']}/rotate-secret", headers=headers)
    new = rotated.json()["signingSecret"]
    assert new != old and rotated.json()["previousSecretExpiresUtc"] is not None
    await emit(api, headers, 1)
    [during] = await receiver.wait_count("/rot", 1)
    assert during.headers["X-Webhook-Signature"] == body_hmac(old, during.body)
    ended = await api.client.post(f"{SUBSCRIPTIONS}/{sub['id']}/end-rotation", headers=headers)
    assert ended.status_code == 200 and ended.json()["previousSecretExpiresUtc"] is None
    await emit(api, headers, 2)
    after = (await receiver.wait_count("/rot", 2))[1]
    assert after.headers["X-Webhook-Signature"] == body_hmac(new, after.body)


async def test_the_signature_scheme_cannot_change(api: Api, receiver: Receiver) -> None:
    headers = await api.key()
    sub = await create(api, headers, url=receiver.url("/fixed"))
    response = await api.client.patch(
        f"{SUBSCRIPTIONS}/{sub['id']}", json={"signatureScheme": "rsa-sha256"}, headers=headers
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "signatureScheme"
    same = await api.client.patch(
        f"{SUBSCRIPTIONS}/{sub['id']}", json={"signatureScheme": "hmac"}, headers=headers
    )
    assert same.status_code == 200


def always(status: int) -> Any:
    def respond(count: int) -> web.Response:
        return web.Response(status=status, text=f"try {count}")

    return respond


async def test_retries_follow_the_subscription_delays(api: Api, receiver: Receiver) -> None:
    delays = [0.4, 0.8, 1.2]
    headers = await api.key()
    url = receiver.on("/sched", always(500))
    sub = await create(api, headers, url=url, retryPolicy={"delays": delays})
    assert sub["retryPolicy"] == {"delays": delays}
    event_id = await emit(api, headers)
    got = await receiver.wait_count("/sched", 4)
    gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
    for gap, delay in zip(gaps, delays, strict=True):
        assert delay * 0.9 <= gap <= delay * 1.1 + 0.5, (gaps, delays)

    async def given_up() -> bool:
        log = await attempts(api, headers, event_id)
        return len(log) == 4

    await eventually(given_up)
    deliveries = await api.client.get(f"/api/v1/events/{event_id}", headers=headers)
    assert deliveries.status_code == 200
    assert len(receiver.at("/sched")) == 4, "len(delays) + 1 attempts, then it fails"


async def test_a_failure_not_in_retry_on_is_attempted_once(api: Api, receiver: Receiver) -> None:
    headers = await api.key()
    gateway = ["timeout", "connection", "408", "429", "5xx"]
    bad = receiver.on("/bad", always(400))
    busy = receiver.on("/busy", always(429))
    await create(api, headers, url=bad, retryPolicy={"retryOn": gateway})
    await create(api, headers, url=busy, retryPolicy={"retryOn": gateway, "delays": [0.1]})
    event_id = await emit(api, headers)
    await receiver.wait_count("/busy", 2)

    async def both_finished() -> bool:
        return len(await attempts(api, headers, event_id)) == 3

    await eventually(both_finished)
    assert len(receiver.at("/bad")) == 1, "a 400 is not in retryOn"


async def test_a_workestra_policy_disables_after_five_failures(
    api: Api, receiver: Receiver
) -> None:
    """Workestra: five attempts, then the webhook is disabled (delays shortened here; the
    schedule's arithmetic is a unit test)."""
    headers = await api.key()
    url = receiver.on("/workestra", always(503))
    policy = {"delays": [0.05, 0.05, 0.05, 0.05], "breakerThreshold": 5}
    sub = await create(api, headers, url=url, retryPolicy=policy)
    await create(api, headers, url=receiver.url("/ops"), eventTypes=["subscription.disabled"])
    await emit(api, headers)
    [notice] = await receiver.wait_count("/ops", 1)
    payload = json.loads(notice.body)["payload"]
    assert (payload["subscriptionId"], payload["reason"]) == (sub["id"], "breaker")
    assert payload["consecutiveFailures"] == 5
    assert len(receiver.at("/workestra")) == 5
    state = await api.client.get(f"{SUBSCRIPTIONS}/{sub['id']}", headers=headers)
    assert (state.json()["enabled"], state.json()["disabledReason"]) == (False, "breaker")


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        ({"delays": [1] * 51}, "body.retryPolicy.delays"),
        ({"delays": [-1]}, "body.retryPolicy.delays.0"),
        ({"retryOn": ["7xx"]}, "body.retryPolicy.retryOn.0"),
        ({"breakerThreshold": 0}, "body.retryPolicy.breakerThreshold"),
        ({"jitter": 0.5}, "body.retryPolicy.jitter"),
    ],
)
async def test_a_bad_retry_policy_is_a_422_naming_the_field(
    api: Api, policy: dict[str, Any], field: str
) -> None:
    headers = await api.key()
    body = {"url": "http://127.0.0.1:9/h", "eventTypes": ["*"], "retryPolicy": policy}
    response = await api.client.post(SUBSCRIPTIONS, json=body, headers=headers)
    assert response.status_code == 422, response.text
    fields = [d["field"] for d in response.json()["error"]["details"]]
    assert field in fields, fields
    listed = await api.client.get(SUBSCRIPTIONS, headers=headers)
    assert listed.json() == [], "nothing half-stored"


async def test_static_headers_are_sent_stored_encrypted_and_read_as_names(
    api: Api, receiver: Receiver
) -> None:
    headers = await api.key()
    static = {"Authorization": "Bearer gateway-token", "X-Tenant": "acme"}
    sub = await create(api, headers, url=receiver.url("/gw"), headers=static)
    assert sorted(sub["headers"]) == ["Authorization", "X-Tenant"]
    assert "gateway-token" not in json.dumps(sub)
    await emit(api, headers)
    [got] = await receiver.wait_count("/gw", 1)
    assert got.headers["Authorization"] == "Bearer gateway-token"
    assert got.headers["X-Tenant"] == "acme"
    tenant = await api.tidings.store.keys.ensure_tenant("acme")
    stored = await api.tidings.store.subscriptions.headers(tenant.id, sub["id"])
    assert stored is not None and "gateway-token" not in stored, "encrypted at rest"
    replaced = await api.client.patch(
        f"{SUBSCRIPTIONS}/{sub['id']}", json={"headers": {"X-Only": "1"}}, headers=headers
    )
    assert replaced.json()["headers"] == ["X-Only"]
    await emit(api, headers)
    second = (await receiver.wait_count("/gw", 2))[1]
    assert second.headers["X-Only"] == "1" and "Authorization" not in second.headers
    cleared = await api.client.patch(
        f"{SUBSCRIPTIONS}/{sub['id']}", json={"headers": None}, headers=headers
    )
    assert cleared.json()["headers"] == []
    await emit(api, headers)
    third = (await receiver.wait_count("/gw", 3))[2]
    assert "X-Only" not in third.headers and "Authorization" not in third.headers


@pytest.mark.parametrize(
    "bad",
    [
        {"X-WH-Signature": "x"},
        {"content-type": "text/plain"},
        {"Bad Name": "x"},
        {"Expect": "100-continue"},
        {"X-Blank": " "},
        {"X-" + "n" * 200: "1"},
    ],
)
async def test_reserved_or_malformed_header_names_are_refused(
    api: Api, bad: dict[str, str]
) -> None:
    headers = await api.key()
    body = {"url": "http://127.0.0.1:9/h", "eventTypes": ["*"], "headers": bad}
    response = await api.client.post(SUBSCRIPTIONS, json=body, headers=headers)
    assert response.status_code == 422, response.text
    [detail] = response.json()["error"]["details"]
    assert detail["field"] == f"headers.{next(iter(bad))}"[: len("headers.") + 128]


SECP112R1 = """-----BEGIN EC PRIVATE KEY-----
MD4CAQEEDr/z3cTCdvMOsTBjciV0oAcGBSuBBAAGoSADHgAEL3i8Ja7/Jjh2pOIM
IpQ2EREPCJDOwRLc+9bAhw==
-----END EC PRIVATE KEY-----
"""
"""A curve ``cryptography`` cannot load (it raises UnsupportedAlgorithm, not ValueError)."""


def rsa_exponent_3() -> str:
    key = rsa.generate_private_key(public_exponent=3, key_size=2048)
    return private_pem(key, serialization.PrivateFormat.PKCS8)


def ec_key() -> str:
    from cryptography.hazmat.primitives.asymmetric import ec

    return private_pem(ec.generate_private_key(ec.SECP256R1()), serialization.PrivateFormat.PKCS8)  # type: ignore[arg-type]


@pytest.mark.parametrize("make", [lambda: SECP112R1, rsa_exponent_3, ec_key])
async def test_keys_tidings_will_not_sign_with_are_a_422(api: Api, make: Any) -> None:
    headers = await api.key()
    body = {"url": "http://127.0.0.1:9/h", "eventTypes": ["*"], "signatureScheme": "rsa-sha256"}
    response = await api.client.post(
        SUBSCRIPTIONS, json={**body, "signingSecret": make()}, headers=headers
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["field"] == "signingSecret"


async def test_rotating_twice_keeps_the_key_receivers_hold_signing(
    api: Api, receiver: Receiver
) -> None:
    """hmac-body sends one signature: A (what receivers hold) signs until the rotation
    ends, however many times it is rotated meanwhile; then the newest signs."""
    headers = await api.key()
    sub = await create(api, headers, url=receiver.url("/twice"), signatureScheme="hmac-body")
    rotate = f"{SUBSCRIPTIONS}/{sub['id']}/rotate-secret"
    await api.client.post(rotate, headers=headers)
    newest = (await api.client.post(rotate, headers=headers)).json()["signingSecret"]
    await emit(api, headers, 1)
    [during] = await receiver.wait_count("/twice", 1)
    assert during.headers["X-Webhook-Signature"] == body_hmac(sub["signingSecret"], during.body)
    await api.client.post(f"{SUBSCRIPTIONS}/{sub['id']}/end-rotation", headers=headers)
    await emit(api, headers, 2)
    after = (await receiver.wait_count("/twice", 2))[1]
    assert after.headers["X-Webhook-Signature"] == body_hmac(newest, after.body)


async def test_an_rsa_rotation_names_the_key_that_still_signs(api: Api, receiver: Receiver) -> None:
    headers = await api.key()
    sub = await create(api, headers, url=receiver.url("/rsa-rot"), signatureScheme="rsa-sha256")
    rotated = await api.client.post(f"{SUBSCRIPTIONS}/{sub['id']}/rotate-secret", headers=headers)
    assert rotated.json()["signingSecret"] is None
    new_key = rotated.json()["publicKey"]
    assert rotated.json()["previousPublicKey"] == sub["publicKey"] != new_key
    await emit(api, headers, 1)
    [during] = await receiver.wait_count("/rsa-rot", 1)
    assert rsa_valid(sub["publicKey"], during.headers["X-WH-Signature"], during.body)
    ended = await api.client.post(f"{SUBSCRIPTIONS}/{sub['id']}/end-rotation", headers=headers)
    assert ended.json()["previousPublicKey"] is None
    await emit(api, headers, 2)
    after = (await receiver.wait_count("/rsa-rot", 2))[1]
    assert rsa_valid(new_key, after.headers["X-WH-Signature"], after.body)


async def test_ending_a_rotation_that_is_not_under_way_is_a_409(
    api: Api, receiver: Receiver
) -> None:
    headers = await api.key()
    sub = await create(api, headers, url=receiver.url("/none"))
    response = await api.client.post(f"{SUBSCRIPTIONS}/{sub['id']}/end-rotation", headers=headers)
    assert response.status_code == 409, response.text


async def test_hmac_body_takes_a_plain_secret_as_workestra_issues_them(
    api: Api, receiver: Receiver
) -> None:
    headers = await api.key()
    secret = "wk_live_8f3a1c2e9b7d4f60"
    sub = await create(
        api, headers, url=receiver.url("/plain"), signatureScheme="hmac-body", signingSecret=secret
    )
    assert sub["signingSecret"] == secret
    await emit(api, headers)
    [got] = await receiver.wait_count("/plain", 1)
    assert got.headers["X-Webhook-Signature"] == body_hmac(secret, got.body)
    short = await api.client.post(
        SUBSCRIPTIONS,
        json={
            "url": receiver.url("/x"),
            "eventTypes": ["*"],
            "signatureScheme": "hmac-body",
            "signingSecret": "short",
        },
        headers=headers,
    )
    assert short.status_code == 422
