"""Interop: a Node.js express receiver, written like the docs' snippet, verifies our deliveries.

``node_receiver/receiver.js`` knows nothing of tidings: it runs a verification snippet of
``tidings/portal/snippets`` verbatim; here the ``hmac`` one, the seed docs' (``express.raw()``
body, ``sha256=`` + hex HMAC-SHA256 keyed by the whole secret string over
``${timestamp}.${rawBody}``, compared with ``crypto.timingSafeEqual``); 200 if valid, else
401. It prints one JSON line per request, which the test awaits. test_interop_snippets.py
runs the other schemes' snippets through it. Dependencies come from ``npm ci`` (the
committed lock file) on first use. Without ``node``/``npm`` on PATH the tests skip, or fail
when ``CI`` is set.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

from tests.conftest import Api, eventually
from tests.integration.test_delivery import attempts_for, emit, subscribe
from tests.support.processes import free_port
from tests.support.snippets import Scheme, snippet_path

pytestmark = pytest.mark.asyncio

NODE_DIR = Path(__file__).parent / "node_receiver"
INSTALL_TIMEOUT = 300.0  # seconds for npm ci on a cold cache
START_TIMEOUT = 20.0  # seconds for node to print its listening line
WAIT_TIMEOUT = 15.0  # seconds for a delivery to reach node / an attempt to be logged


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (required in CI)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def node() -> str:
    """The node binary, with the receiver's dependencies installed (npm ci) if missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable("node and npm are not on PATH: the Node.js interop test needs them")
    if not (NODE_DIR / "node_modules" / "express" / "package.json").exists():
        command = "ci" if (NODE_DIR / "package-lock.json").exists() else "install"
        args = [npm, command, "--no-audit", "--no-fund", "--loglevel=error"]
        try:
            done = subprocess.run(
                args, cwd=NODE_DIR, capture_output=True, text=True, timeout=INSTALL_TIMEOUT
            )
        except subprocess.TimeoutExpired:
            _unavailable(f"npm {command} in {NODE_DIR} took over {INSTALL_TIMEOUT:.0f} s")
        if done.returncode != 0:
            _unavailable(f"npm {command} in {NODE_DIR} failed:\n{done.stderr[-3000:]}")
    return node


class NodeReceiver:
    """receiver.js in a subprocess; its stdout is a stream of JSON records."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log
        self.records: list[dict[str, Any]] = []

    def url(self, path: str = "/webhooks/tidings") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _next_line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            await self.proc.wait()
            raise RuntimeError(
                f"node receiver exited ({self.proc.returncode}):\n{self.log.read_text()}"
            )
        return json.loads(line)  # type: ignore[no-any-return]

    async def wait_listening(self) -> None:
        async with asyncio.timeout(START_TIMEOUT):
            first = await self._next_line()
        assert first == {"listening": self.port}, first

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first request record (seen already or still to come) that satisfies predicate."""
        for record in self.records:
            if predicate(record):
                return record
        async with asyncio.timeout(WAIT_TIMEOUT):
            while True:
                record = await self._next_line()
                self.records.append(record)
                if predicate(record):
                    return record


@contextlib.asynccontextmanager
async def node_receiver(
    node: str, secret: str, port: int, tmp_path: Path, scheme: Scheme = "hmac"
) -> AsyncIterator[NodeReceiver]:
    """receiver.js verifying with ``scheme``'s Node snippet and ``secret`` (the signing
    secret, or the public key of an ed25519 or rsa-sha256 subscription)."""
    log = tmp_path / f"node-receiver-{port}.log"
    env = {
        **os.environ,
        "SCHEME": scheme,
        "SNIPPET": str(snippet_path(scheme, "node")),
        "WEBHOOK_SECRET": secret,
        "PORT": str(port),
        "HOST": "127.0.0.1",
    }
    with log.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            node,
            "receiver.js",
            cwd=NODE_DIR,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    receiver = NodeReceiver(proc, port, log)
    try:
        await receiver.wait_listening()
        yield receiver
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


def other_secret() -> str:
    """A well-formed secret (Standard Webhooks form) that no subscription here holds."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


async def node_subscription(api: Api) -> tuple[dict[str, str], int, dict[str, Any]]:
    """A new tenant key's headers, a free port for the Node receiver, and a subscription
    of client.* events to it there (with an auto-generated secret)."""
    headers = await api.key()
    port = free_port()
    sub = await subscribe(api, headers, f"http://127.0.0.1:{port}/webhooks/tidings", "client.*")
    return headers, port, sub


async def emit_to(
    api: Api, headers: dict[str, str], rx: NodeReceiver
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Emit a client.created event: it, and what the Node receiver recorded of it."""
    event = await emit(api, headers, "client.created")
    return event, await rx.wait_for(lambda r: r["webhookId"] == event["id"])


async def first_attempt_logged(api: Api, headers: dict[str, str], event_id: str) -> bool:
    return any(a["attempt"] == 1 for a in await attempts_for(api, headers, event_id))


async def test_node_express_receiver_accepts_our_signature(
    api: Api, node: str, tmp_path: Path
) -> None:
    headers, port, sub = await node_subscription(api)
    # The subscription's own, auto-generated secret is what the Node receiver is given.
    async with node_receiver(node, sub["signingSecret"], port, tmp_path) as rx:
        event, record = await emit_to(api, headers, rx)
        assert record == {
            "path": "/webhooks/tidings",
            "status": 200,
            "valid": True,
            "webhookId": event["id"],
            "eventId": event["id"],
            "timestamp": record["timestamp"],
            "signed": record["signed"],
        }
        assert record["timestamp"].isdigit()
        assert json.loads(record["signed"]["body"])["id"] == event["id"]
        assert record["signed"]["headers"]["X-Webhook-Timestamp"] == record["timestamp"]
        await eventually(lambda: first_attempt_logged(api, headers, event["id"]), WAIT_TIMEOUT)
        async with httpx.AsyncClient() as client:
            recorded = (await client.get(rx.url("/results"))).json()
        assert recorded == rx.records
    [attempt] = await attempts_for(api, headers, event["id"])
    assert attempt["subscriptionId"] == sub["id"]
    assert (attempt["attempt"], attempt["statusCode"], attempt["status"]) == (1, 200, "succeeded")
    assert json.loads(attempt["responseBody"]) == {"received": True}


async def test_node_express_receiver_rejects_another_secret(
    api: Api, node: str, tmp_path: Path
) -> None:
    headers, port, sub = await node_subscription(api)
    node_secret = other_secret()
    assert node_secret != sub["signingSecret"]
    async with node_receiver(node, node_secret, port, tmp_path) as rx:
        event, record = await emit_to(api, headers, rx)
        assert (record["valid"], record["status"], record["eventId"]) == (False, 401, None)
        await eventually(lambda: first_attempt_logged(api, headers, event["id"]), WAIT_TIMEOUT)
    log = await attempts_for(api, headers, event["id"])
    first = next(a for a in log if a["attempt"] == 1)
    assert first["subscriptionId"] == sub["id"]
    assert (first["statusCode"], first["status"]) == (401, "failed")
    assert json.loads(first["responseBody"]) == {"error": "Invalid signature"}
    assert not any(a["status"] == "succeeded" for a in log)
