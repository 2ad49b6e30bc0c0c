"""Interop: every verification snippet the portal shows (``tidings/portal/snippets``), run
verbatim against real deliveries of a subscription of its scheme.

The snippets are the seed products' own receiver code where they publish one:
WhiteLabelCRO's Node and Flask checks (``hmac``), Workestra's Python check (``hmac-body``:
``hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()`` against the ``sha256=``
value) and GoHighLevel's Node check (``rsa-sha256``: ``crypto.createVerify('SHA256')`` over
``JSON.stringify(req.body)``, a re-serialized body). Python snippets check what the in-process
receiver captured; Node snippets run in ``node_receiver/receiver.js``, which tidings delivers
to, and which the test then sends the same delivery altered. Payloads hold ints, strings,
nested objects and non-ASCII text, so a re-serializing receiver sees the bytes that were signed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Api, eventually
from tests.e2e.test_interop_node import (
    WAIT_TIMEOUT,
    NodeReceiver,
    first_attempt_logged,
    node_receiver,
)
from tests.e2e.test_interop_node import node as node
from tests.integration.test_delivery import attempts_for
from tests.support.processes import free_port
from tests.support.receiver import Receiver
from tests.support.snippets import SCHEMES, Scheme, python_verifier
from tidings.receiver import WebhookVerificationError, verify

pytestmark = pytest.mark.asyncio

PAYLOAD: dict[str, Any] = {
    "clientId": "cli_42",
    "name": "Zoë Ñandú 東京 🎉",
    "amount": {"amount": 1999, "currency": "EUR", "history": [-3, 0, 9007199254740991]},
    "tags": ["vip", "</script>", 'quote " and \\ backslash', "\u0007bell"],
    "active": True,
    "notes": None,
}
ASYMMETRIC = ("ed25519", "rsa-sha256")

each_scheme = pytest.mark.parametrize("scheme", SCHEMES)


async def subscribe(api: Api, headers: dict[str, str], url: str, scheme: Scheme) -> str:
    """A subscription of ``scheme`` to ``url``; returns what its receivers verify with."""
    response = await api.client.post(
        "/api/v1/webhooks/subscriptions",
        json={"url": url, "eventTypes": ["client.created"], "signatureScheme": scheme},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    sub = response.json()
    assert sub["signatureScheme"] == scheme
    key: str = sub["publicKey"] if scheme in ASYMMETRIC else sub["signingSecret"]
    assert key
    return key


async def emit(api: Api, headers: dict[str, str]) -> dict[str, Any]:
    response = await api.client.post(
        "/api/v1/events", json={"type": "client.created", "payload": PAYLOAD}, headers=headers
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def tampered(body: bytes) -> bytes:
    """The same JSON with one value changed (a re-serializing receiver still sees it)."""
    changed = body.replace("Zoë".encode(), b"Zoe")
    assert changed != body
    return changed


def run_python_snippet(scheme: Scheme, headers: dict[str, str], body: bytes, key: str) -> bool:
    """Call the scheme's Python snippet as its docstring tells a Flask app to."""
    verify_signature = python_verifier(scheme)
    get = {name.lower(): value for name, value in headers.items()}.get
    if scheme == "hmac":
        args: tuple[str, ...] = (get("x-webhook-timestamp", ""), get("x-webhook-signature", ""))
    elif scheme == "hmac-body":
        args = (get("x-webhook-signature", ""),)
    elif scheme == "rsa-sha256":
        args = (get("x-wh-signature", ""),)
    else:
        args = (get("webhook-id", ""), get("webhook-timestamp", ""), get("webhook-signature", ""))
    return verify_signature(body, *args, key)


@each_scheme
async def test_python_snippet_verifies_real_deliveries(
    api: Api, receiver: Receiver, scheme: Scheme
) -> None:
    headers = await api.key()
    key = await subscribe(api, headers, receiver.url(f"/{scheme}"), scheme)
    other_key = await subscribe(api, headers, receiver.url(f"/{scheme}-other"), scheme)
    event = await emit(api, headers)
    [got] = await receiver.wait_count(f"/{scheme}", 1)
    assert json.loads(got.body)["payload"] == PAYLOAD

    assert run_python_snippet(scheme, got.headers, got.body, key)
    assert not run_python_snippet(scheme, got.headers, tampered(got.body), key)
    assert not run_python_snippet(scheme, got.headers, got.body, other_key)
    assert not run_python_snippet(scheme, {}, got.body, key)

    verify(key, got.headers, got.body)  # tidings.receiver agrees with the snippet
    with pytest.raises(WebhookVerificationError):
        verify(key, got.headers, tampered(got.body))
    assert got.headers["X-Webhook-Id"] == event["id"]


async def replay(
    rx: NodeReceiver, path: str, signed: dict[str, Any], body: bytes
) -> dict[str, Any]:
    """Send what the Node receiver got from tidings, with ``body``, to ``path``; its record."""
    headers = {**signed["headers"], "Content-Type": "application/json"}
    async with httpx.AsyncClient() as client:
        await client.post(rx.url(path), content=body, headers=headers)
    return await rx.wait_for(lambda record: record["path"] == path)


@each_scheme
async def test_node_snippet_verifies_real_deliveries(
    api: Api, node: str, tmp_path: Path, scheme: Scheme
) -> None:
    headers = await api.key()
    port = free_port()
    key = await subscribe(api, headers, f"http://127.0.0.1:{port}/webhooks/tidings", scheme)
    async with node_receiver(node, key, port, tmp_path, scheme) as rx:
        event = await emit(api, headers)
        record = await rx.wait_for(lambda r: r["webhookId"] == event["id"])
        assert (record["valid"], record["status"], record["eventId"]) == (True, 200, event["id"])
        body = record["signed"]["body"].encode()
        assert json.loads(body)["payload"] == PAYLOAD

        altered = await replay(rx, "/tampered", record["signed"], tampered(body))
        assert (altered["valid"], altered["status"]) == (False, 401)
        unsigned = {**record["signed"], "headers": {"X-Webhook-Id": event["id"]}}
        missing = await replay(rx, "/unsigned", unsigned, body)
        assert (missing["valid"], missing["status"]) == (False, 401)
        if scheme == "rsa-sha256":
            # GoHighLevel's check re-serializes the body: whitespace is not part of what
            # it verifies, so a reformatted body still passes, and only that.
            spaced = json.dumps(json.loads(body), indent=2, ensure_ascii=False).encode()
            reformatted = await replay(rx, "/reformatted", record["signed"], spaced)
            assert (reformatted["valid"], reformatted["status"]) == (True, 200)

        await eventually(lambda: first_attempt_logged(api, headers, event["id"]), WAIT_TIMEOUT)
    [attempt] = await attempts_for(api, headers, event["id"])
    assert (attempt["statusCode"], attempt["status"]) == (200, "succeeded")
