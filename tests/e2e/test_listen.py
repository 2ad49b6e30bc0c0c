"""``tidings listen`` forwards a server's deliveries to a local app; ``trigger`` emits."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import TIDINGS, create_key, serving
from tests.support.receiver import Receiver
from tests.support.snippets import python_verifier
from tidings.receiver import verify

pytestmark = pytest.mark.asyncio


@contextlib.asynccontextmanager
async def listening(
    args: list[str], env: dict[str, str]
) -> AsyncIterator[tuple[asyncio.subprocess.Process, list[str]]]:
    proc = await asyncio.create_subprocess_exec(
        *TIDINGS, "listen", *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    lines: list[str] = []
    try:
        yield proc, lines
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(20):
                await proc.wait()


async def read_until(proc: asyncio.subprocess.Process, lines: list[str], needle: str) -> str:
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        while True:
            line = (await proc.stdout.readline()).decode()
            if not line:
                raise AssertionError(f"listen exited:\n{''.join(lines)}")
            lines.append(line)
            if needle in line:
                return line


async def trigger(event_type: str, base: str, key: str, env: dict[str, str]) -> str:
    """``tidings trigger``, as a user runs it; the id of the event it emitted."""
    done = await asyncio.to_thread(
        subprocess.run,
        [*TIDINGS, "trigger", event_type, "--server", base, "--api-key", key],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.split()[-1]


async def test_listen_forwards_and_cleans_up(
    tmp_path: Path, receiver: Receiver, server_env: dict[str, str]
) -> None:
    key = create_key(server_env)
    async with serving(server_env, tmp_path) as (base, _):
        args = ["--forward-to", receiver.url("/app"), "--server", base, "--api-key", key]
        async with listening(args, server_env) as (proc, lines):
            await read_until(proc, lines, "Ready:")
            secret = (await read_until(proc, lines, "Signing secret")).split()[-1]
            event_id = await trigger("payment.succeeded", base, key, server_env)
            [got] = await receiver.wait_count("/app", 1)
            assert got.headers["X-Webhook-Id"] == event_id
            verify(secret, got.headers, got.body)
            line = await read_until(proc, lines, event_id)
            assert "payment.succeeded" in line and "signature ok" in line and "-> 200" in line
            proc.send_signal(signal.SIGTERM)
            await read_until(proc, lines, "Removed the temporary subscription")
            async with asyncio.timeout(20):
                assert await proc.wait() == 0
        async with httpx.AsyncClient(base_url=base, headers={"X-Api-Key": key}) as client:
            assert (await client.get("/api/v1/webhooks/subscriptions")).json() == []


async def test_listen_with_rsa_sha256_static_headers_and_a_retry_policy(
    tmp_path: Path, receiver: Receiver, server_env: dict[str, str]
) -> None:
    """The app gets X-WH-Signature (and the static header) and verifies it with the PEM that
    listen prints; GoHighLevel's snippet agrees; listen reports the signature good."""
    key = create_key(server_env)
    async with serving(server_env, tmp_path) as (base, _):
        args = [
            *("--forward-to", receiver.url("/rsa"), "--server", base, "--api-key", key),
            *("--signature-scheme", "rsa-sha256", "--header", "Authorization: Bearer gw-1"),
            *("--retry-policy", '{"delays": [1, 2], "retryOn": ["5xx"]}'),
        ]
        async with listening(args, server_env) as (proc, lines):
            await read_until(proc, lines, "Signature scheme: rsa-sha256")
            start = len(lines)
            await read_until(proc, lines, "-----END PUBLIC KEY-----")
            assert lines[start].startswith("Public key for your app (PEM):")
            pem = "".join(lines[start + 1 :])
            assert pem.startswith("-----BEGIN PUBLIC KEY-----\n")
            async with httpx.AsyncClient(base_url=base, headers={"X-Api-Key": key}) as client:
                [sub] = (await client.get("/api/v1/webhooks/subscriptions")).json()
            assert sub["signatureScheme"] == "rsa-sha256"
            assert sub["publicKey"].strip() == pem.strip()
            assert sub["retryPolicy"]["delays"] == [1, 2]
            assert sub["retryPolicy"]["retryOn"] == ["5xx"]
            assert sub["headers"] == ["Authorization"]

            event_id = await trigger("client.created", base, key, server_env)
            [got] = await receiver.wait_count("/rsa", 1)
            assert got.headers["X-Webhook-Id"] == event_id
            assert got.headers["Authorization"] == "Bearer gw-1"
            assert "X-Webhook-Signature" not in got.headers
            verify(pem, got.headers, got.body)
            snippet = python_verifier("rsa-sha256")
            assert snippet(got.body, got.headers["X-WH-Signature"], pem)
            assert not snippet(got.body + b" ", got.headers["X-WH-Signature"], pem)
            line = await read_until(proc, lines, event_id)
            assert "client.created" in line and "signature ok" in line and "-> 200" in line
