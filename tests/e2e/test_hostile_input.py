"""Hostile input against the real server (uvicorn on a real port), on both databases:
chunked bodies past the limit, JSON that only Python accepts, and raw bytes on the wire."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import create_key, serving, tidings_env

pytestmark = pytest.mark.asyncio

LIMIT = 4096


@pytest.fixture
async def small_server(tmp_path: Path, database_url: str) -> AsyncIterator[tuple[str, str]]:
    """``tidings serve`` with a 4 KiB body limit: yields (base URL, admin key)."""
    env = tidings_env(
        tmp_path / "data", TIDINGS_DATABASE_URL=database_url, TIDINGS_MAX_REQUEST_BYTES=str(LIMIT)
    )
    key = create_key(env)
    async with serving(env, tmp_path) as (base, _):
        yield base, key


async def chunks(body: bytes, size: int = 512) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def test_chunked_bodies_over_the_limit_are_413_and_store_nothing(
    small_server: tuple[str, str],
) -> None:
    base, key = small_server
    headers = {"X-Api-Key": key, "Content-Type": "application/json"}
    big = json.dumps({"type": "client.created", "payload": {"blob": "x" * 4 * LIMIT}}).encode()
    small = json.dumps({"type": "client.created", "payload": {"blob": "x" * 100}}).encode()
    async with httpx.AsyncClient(base_url=base, headers=headers) as client:
        request = client.build_request("POST", "/api/v1/events", content=chunks(big))
        assert request.headers["transfer-encoding"] == "chunked"
        response = await client.send(request)
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "payload_too_large"
        assert (await client.get("/api/v1/events")).json() == []

        accepted = await client.post("/api/v1/events", content=chunks(small, 16))
        assert accepted.status_code == 201, accepted.text
        assert [e["id"] for e in (await client.get("/api/v1/events")).json()] == [
            accepted.json()["id"]
        ]


async def test_json_only_python_accepts_is_400(small_server: tuple[str, str]) -> None:
    base, key = small_server
    headers = {"X-Api-Key": key, "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=base, headers=headers) as client:
        for payload in ('{"x": NaN}', '{"x": -Infinity}', '{"x": "\\ud800"}', '{"\\udc00": 1}'):
            body = f'{{"type": "client.created", "payload": {payload}}}'
            response = await client.post("/api/v1/events", content=body)
            assert response.status_code == 400, (payload, response.text)
            assert response.json()["error"]["code"] == "invalid_json"
        client_body = '{"firstName": "\\udbff", "lastName": "L", "email": "a@example.com"}'
        assert (await client.post("/api/v1/clients", content=client_body)).status_code == 400
        assert (await client.get("/api/v1/events")).json() == []


async def raw_request(base: str, request: bytes) -> int:
    """Send bytes no HTTP client library would, and return the status code answered."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    return int(status_line.split()[1])


async def test_raw_bytes_and_nul_on_the_wire_are_4xx(small_server: tuple[str, str]) -> None:
    base, key = small_server
    auth = b"X-Api-Key: " + key.encode() + b"\r\n"
    emit = b'{"type": "client.created", "payload": {}}'
    post = (
        b"POST /api/v1/events HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        + auth
        + b"Content-Type: application/json\r\nContent-Length: "
        + str(len(emit)).encode()
        + b"\r\n"
    )
    cases = [
        b"GET /api/v1/events/evt_\xed\xa0\x80 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        + auth
        + b"\r\n",
        b"GET /api/v1/events?type=\xed\xa0\x80 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        + auth
        + b"\r\n",
        b"GET /api/v1/events/evt_%00 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + auth + b"\r\n",
        b"GET /api/v1/clients/search?email=%00 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        + auth
        + b"\r\n",
        post + b"Idempotency-Key: a\x00b\r\n\r\n" + emit,
    ]
    for request in cases:
        status = await raw_request(base, request)
        assert 400 <= status < 500, (request, status)
    assert await raw_request(base, post + b"Idempotency-Key: \xed\xa0\x80\r\n\r\n" + emit) == 201
