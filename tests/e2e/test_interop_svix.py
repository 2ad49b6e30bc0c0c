"""Interop: a real delivery verifies unchanged with svix, standardwebhooks and the seed snippet.

A delivery from the dispatcher is captured byte for byte by a real receiver on 127.0.0.1, then
handed to three verifiers that know nothing of tidings:

* ``svix.webhooks.Webhook(secret).verify(body, headers)``, with the ``webhook-*`` headers as
  sent and with them renamed ``svix-*`` (what Svix's own deliveries carry);
* ``standardwebhooks.webhooks.Webhook(secret).verify(body, headers)``;
* the seed docs' Flask receiver, as the portal's ``hmac`` Python snippet: ``sha256=`` + hex
  HMAC-SHA256 keyed by the whole secret over ``"{timestamp}.{raw_body}"``, compared with
  ``hmac.compare_digest``.

A tampered body, or another secret, must fail all three.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError as StandardVerificationError
from svix.webhooks import Webhook as SvixWebhook
from svix.webhooks import WebhookVerificationError as SvixVerificationError

from tests.conftest import Api
from tests.integration.test_delivery import emit, subscribe
from tests.support.receiver import Receiver
from tests.support.snippets import python_verifier

pytestmark = pytest.mark.asyncio


@dataclass
class Delivery:
    secret: str
    event: dict[str, Any]
    headers: dict[str, str]
    body: bytes


@pytest.fixture
async def delivery(api: Api, receiver: Receiver) -> Delivery:
    """One real delivery of a freshly emitted event, as the receiver got it."""
    headers = await api.key()
    sub = await subscribe(api, headers, receiver.url("/interop"), "client.*")
    event = await emit(api, headers, "client.created")
    [got] = await receiver.wait_count("/interop", 1)
    return Delivery(sub["signingSecret"], event, got.headers, got.body)


def flask_snippet_verify(secret: str, headers: Mapping[str, str], raw_body: bytes) -> bool:
    """The seed docs' Flask receiver: the ``hmac`` snippet, called as its docstring says."""
    lowered = {k.lower(): v for k, v in headers.items()}  # Flask's headers ignore case
    signature = lowered.get("x-webhook-signature", "")
    timestamp = lowered.get("x-webhook-timestamp", "")
    return python_verifier("hmac")(raw_body, timestamp, signature, secret)


def svix_named(headers: Mapping[str, str]) -> dict[str, str]:
    """The same delivery with the Standard Webhooks headers under Svix's own names."""
    renamed = {k: v for k, v in headers.items() if not k.lower().startswith("webhook-")}
    lowered = {k.lower(): v for k, v in headers.items()}
    for name in ("id", "timestamp", "signature"):
        renamed[f"svix-{name}"] = lowered[f"webhook-{name}"]
    return renamed


async def test_delivery_verifies_with_svix_standardwebhooks_and_seed_snippet(
    delivery: Delivery,
) -> None:
    secret, body, headers = delivery.secret, delivery.body, delivery.headers
    assert secret.startswith("whsec_")
    assert headers["webhook-id"] == delivery.event["id"]

    SvixWebhook(secret).verify(body, headers)  # raises on failure
    renamed = svix_named(headers)
    assert not any(k.lower().startswith("webhook-") for k in renamed)
    SvixWebhook(secret).verify(body, renamed)

    assert StandardWebhook(secret).verify(body, headers) == delivery.event

    assert flask_snippet_verify(secret, headers, body)


def _edited(body: bytes) -> bytes:
    return body.replace(b'"Ada"', b'"Eve"')


def _reserialized(body: bytes) -> bytes:
    return json.dumps(json.loads(body), indent=2).encode()


def _trailing_newline(body: bytes) -> bytes:
    return body + b"\n"


@pytest.mark.parametrize(
    "tamper", [_edited, _reserialized, _trailing_newline], ids=lambda f: f.__name__.strip("_")
)
async def test_tampered_body_fails_every_verifier(
    delivery: Delivery, tamper: Callable[[bytes], bytes]
) -> None:
    secret, headers = delivery.secret, delivery.headers
    body = tamper(delivery.body)
    assert body != delivery.body

    with pytest.raises(SvixVerificationError):
        SvixWebhook(secret).verify(body, headers)
    with pytest.raises(SvixVerificationError):
        SvixWebhook(secret).verify(body, svix_named(headers))
    with pytest.raises(StandardVerificationError):
        StandardWebhook(secret).verify(body, headers)
    assert not flask_snippet_verify(secret, headers, body)


async def test_another_secret_fails_every_verifier(delivery: Delivery) -> None:
    other = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    body, headers = delivery.body, delivery.headers

    with pytest.raises(SvixVerificationError):
        SvixWebhook(other).verify(body, headers)
    with pytest.raises(StandardVerificationError):
        StandardWebhook(other).verify(body, headers)
    assert not flask_snippet_verify(other, headers, body)
