"""Secret rotation (both secrets sign during the grace period) and Ed25519 subscriptions."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api, eventually
from tests.integration.test_delivery import attempts_for, emit
from tests.support.receiver import Receiver
from tests.support.snippets import python_verifier
from tidings.receiver import WebhookVerificationError, verify

pytestmark = pytest.mark.asyncio


async def subscribe(api: Api, headers: dict[str, str], url: str, **extra: Any) -> dict[str, Any]:
    response = await api.client.post(
        "/api/v1/webhooks/subscriptions",
        json={"url": url, "eventTypes": ["client.created"], **extra},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def rotate(api: Api, headers: dict[str, str], sub_id: str) -> dict[str, Any]:
    response = await api.client.post(
        f"/api/v1/webhooks/subscriptions/{sub_id}/rotate-secret", headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_rotation_signs_with_both_secrets_during_grace(api: Api, receiver: Receiver) -> None:
    headers = await api.key()
    sub = await subscribe(api, headers, receiver.url("/rot"))
    old = sub["signingSecret"]
    rotated = await rotate(api, headers, sub["id"])
    new = rotated["signingSecret"]
    assert new != old and new.startswith("whsec_")
    assert rotated["previousSecretExpiresUtc"] is not None
    fetched = await api.client.get(f"/api/v1/webhooks/subscriptions/{sub['id']}", headers=headers)
    assert old not in fetched.text and new not in fetched.text
    await emit(api, headers)
    [got] = await receiver.wait_count("/rot", 1)
    assert got.headers["X-Webhook-Signature"].count("sha256=") == 2
    assert len(got.headers["webhook-signature"].split()) == 2
    verify(old, got.headers, got.body)
    verify(new, got.headers, got.body)


async def test_after_the_grace_period_only_the_new_secret_signs(
    start_api: Any, receiver: Receiver
) -> None:
    async with start_api(secret_rotation_grace=0) as api:
        headers = await api.key()
        sub = await subscribe(api, headers, receiver.url("/rot0"))
        new = (await rotate(api, headers, sub["id"]))["signingSecret"]
        event = await emit(api, headers)
        [got] = await receiver.wait_count("/rot0", 1)
        verify(new, got.headers, got.body)
        with pytest.raises(WebhookVerificationError):
            verify(sub["signingSecret"], got.headers, got.body)
        assert got.headers["X-Webhook-Id"] == event["id"]


def verify_ed25519(public_key: str, headers: dict[str, str], body: bytes) -> bool:
    """What a receiver holding only the public key does (Standard Webhooks v1a): the
    ``ed25519`` snippet the portal shows."""
    ids = headers["webhook-id"], headers["webhook-timestamp"], headers["webhook-signature"]
    return python_verifier("ed25519")(body, *ids, public_key)


async def test_ed25519_subscription_verifies_with_the_public_key(
    api: Api, receiver: Receiver
) -> None:
    headers = await api.key()
    sub = await subscribe(api, headers, receiver.url("/ed"), signatureScheme="ed25519")
    assert sub["signatureScheme"] == "ed25519"
    assert sub["signingSecret"].startswith("whsk_") and sub["publicKey"].startswith("whpk_")
    fetched = await api.client.get(f"/api/v1/webhooks/subscriptions/{sub['id']}", headers=headers)
    assert fetched.json()["publicKey"] == sub["publicKey"]
    assert sub["signingSecret"] not in fetched.text
    event = await emit(api, headers)
    [got] = await receiver.wait_count("/ed", 1)
    assert "X-Webhook-Signature" not in got.headers
    assert verify_ed25519(sub["publicKey"], got.headers, got.body)
    assert not verify_ed25519(sub["publicKey"], got.headers, got.body + b" ")

    rotated = await rotate(api, headers, sub["id"])
    assert rotated["publicKey"] != sub["publicKey"]
    await api.client.post(f"/api/v1/events/{event['id']}/redeliver", headers=headers)
    [_, again] = await receiver.wait_count("/ed", 2)
    assert verify_ed25519(sub["publicKey"], again.headers, again.body)
    assert verify_ed25519(rotated["publicKey"], again.headers, again.body)

    async def logged() -> bool:
        return len(await attempts_for(api, headers, event["id"])) == 2

    await eventually(logged)
