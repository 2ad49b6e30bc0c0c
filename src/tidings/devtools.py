"""``tidings listen`` and ``tidings trigger``: try webhooks locally without a tunnel.

``listen`` serves a small HTTP endpoint on 127.0.0.1, registers a temporary
subscription for it on a tidings server (with the signature scheme, static headers and
retry policy the developer chose), and forwards every delivery (same body, same signature
and static headers) to the developer's app, printing one line per delivery with whether
its signature verified. On exit it deletes the subscription. The app verifies with the
secret, or for ``ed25519`` and ``rsa-sha256`` the public key, that ``listen`` prints.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from tidings.domain.signatures import SignatureScheme
from tidings.receiver import WebhookVerificationError, verify

FORWARDED_HEADERS = (
    "X-Webhook-Id",
    "X-Webhook-Timestamp",
    "X-Webhook-Signature",
    "X-WH-Signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "Content-Type",
)
ASYMMETRIC = (SignatureScheme.ED25519, SignatureScheme.RSA_SHA256)


@dataclass(frozen=True)
class Options:
    """What the temporary subscription is created with, beyond its URL and event types."""

    scheme: SignatureScheme = SignatureScheme.HMAC
    headers: Mapping[str, str] = field(default_factory=dict)
    """Static headers tidings adds to every delivery; ``listen`` forwards them too."""
    retry_policy: Mapping[str, Any] | None = None
    """``{delays, retryOn, breakerThreshold}``, as the API takes it."""
    filter: Mapping[str, Any] | None = None
    """Only events that pass it are forwarded (the API's ``filter``)."""
    transformation: str | None = None
    """JavaScript run on each delivery before it is signed (the API's ``transformation``)."""

    def subscription(self) -> dict[str, Any]:
        body: dict[str, Any] = {"signatureScheme": self.scheme.value}
        if self.headers:
            body["headers"] = dict(self.headers)
        if self.retry_policy is not None:
            body["retryPolicy"] = dict(self.retry_policy)
        if self.filter is not None:
            body["filter"] = dict(self.filter)
        if self.transformation is not None:
            body["transformation"] = self.transformation
        return body


@dataclass(frozen=True)
class Target:
    server: str
    api_key: str

    def client(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            self.server,
            headers={"X-Api-Key": self.api_key},
            timeout=aiohttp.ClientTimeout(total=30),
        )


async def trigger(target: Target, event_type: str) -> dict[str, object]:
    """Emit the catalog's sample payload for ``event_type``; returns the envelope."""
    async with target.client() as api:
        async with api.get(f"/api/v1/event-types/{event_type}") as found:
            if found.status != 200:
                raise SystemExit(f"unknown event type {event_type!r} ({found.status})")
            sample = (await found.json())["samplePayload"]
        body = {"type": event_type, "payload": sample, "metadata": {"trigger": True}}
        async with api.post("/api/v1/events", json=body) as emitted:
            if emitted.status != 201:
                raise SystemExit(f"emit failed: {emitted.status} {await emitted.text()}")
            envelope: dict[str, object] = await emitted.json()
            return envelope


async def listen(
    target: Target,
    forward_to: str,
    event_types: Sequence[str],
    out: Callable[[str], None] = print,
    ready: asyncio.Event | None = None,
    options: Options | None = None,
) -> None:
    """Forward deliveries until SIGINT/SIGTERM, then remove the temporary subscription."""
    chosen = options or Options()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    key: list[str] = []
    """What the app verifies with, once the subscription exists (the forwarder checks too)."""
    forwarded = (*FORWARDED_HEADERS, *chosen.headers)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as app_client:
        runner, port = await _serve(_forwarder(app_client, forward_to, out, key, forwarded))
        try:
            async with target.client() as api:
                sub = await _subscribe(api, f"http://127.0.0.1:{port}/", event_types, chosen)
                try:
                    key.append(_verification_key(chosen.scheme, sub))
                    out(f"Ready: forwarding {', '.join(event_types)} to {forward_to}")
                    out(f"Signature scheme: {chosen.scheme.value}")
                    if chosen.scheme is SignatureScheme.RSA_SHA256:
                        out(f"Public key for your app (PEM):\n{key[0].strip()}")
                    elif chosen.scheme is SignatureScheme.ED25519:
                        out(f"Public key for your app: {key[0]}")
                    else:
                        out(f"Signing secret for your app: {key[0]}")
                    if ready is not None:
                        ready.set()
                    await stop.wait()
                finally:
                    async with api.delete(f"/api/v1/webhooks/subscriptions/{sub['id']}"):
                        out("Removed the temporary subscription.")
        finally:
            await runner.cleanup()


def _verification_key(scheme: SignatureScheme, sub: Mapping[str, Any]) -> str:
    """The public key for the asymmetric schemes (``signingSecret`` is then the private key,
    or null for rsa-sha256, and never goes to the app), else the shared secret."""
    value = sub["publicKey"] if scheme in ASYMMETRIC else sub["signingSecret"]
    if not isinstance(value, str):
        raise SystemExit(f"the server sent no key to verify {scheme.value} deliveries with")
    return value


async def _subscribe(
    api: aiohttp.ClientSession, url: str, event_types: Sequence[str], options: Options
) -> dict[str, Any]:
    body = {
        "url": url,
        "eventTypes": list(event_types),
        "description": "tidings listen",
        **options.subscription(),
    }
    async with api.post("/api/v1/webhooks/subscriptions", json=body) as response:
        if response.status != 201:
            raise SystemExit(f"could not subscribe: {response.status} {await response.text()}")
        created: dict[str, Any] = await response.json()
        return created


async def _serve(handler: Callable[[web.Request], object]) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_post("/{tail:.*}", handler)  # type: ignore[arg-type]
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    return runner, int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]


def _forwarder(
    client: aiohttp.ClientSession,
    forward_to: str,
    out: Callable[[str], None],
    key: Sequence[str],
    forwarded: Sequence[str],
) -> Callable[[web.Request], object]:
    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k: request.headers[k] for k in forwarded if k in request.headers}
        event_id = request.headers.get("X-Webhook-Id", "?")
        event_type = _event_type(body)
        signature = _signature_check(key, headers, body)
        started = time.perf_counter()
        try:
            async with client.post(forward_to, data=body, headers=headers) as answer:
                text = await answer.text()
                status = answer.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            out(
                f"{time.strftime('%H:%M:%S')}  {event_type:28s} {event_id}  {signature}  "
                f"-> error: {exc}"
            )
            return web.Response(status=502, text=f"forwarding failed: {exc}")
        elapsed = (time.perf_counter() - started) * 1000
        out(
            f"{time.strftime('%H:%M:%S')}  {event_type:28s} {event_id}  {signature}  "
            f"-> {status} in {elapsed:.0f} ms"
        )
        return web.Response(status=status, text=text[:4000])

    return forward


def _signature_check(key: Sequence[str], headers: Mapping[str, str], body: bytes) -> str:
    """What the app will find when it verifies this delivery with the printed key."""
    if not key:
        return "signature unchecked"  # a delivery before the subscription was answered
    try:
        verify(key[0], headers, body)
    except WebhookVerificationError as exc:
        return f"signature INVALID ({exc})"
    return "signature ok"


def _event_type(body: bytes) -> str:
    try:
        return str(json.loads(body).get("type", "?"))
    except (ValueError, AttributeError):
        return "?"


def run_listen(
    target: Target, forward_to: str, event_types: Sequence[str], options: Options | None = None
) -> None:
    asyncio.run(listen(target, forward_to, event_types, options=options))


def run_trigger(target: Target, event_type: str) -> dict[str, object]:
    return asyncio.run(trigger(target, event_type))
