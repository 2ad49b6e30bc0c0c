"""The ceiling: how fast this machine sends signed webhooks from Python with no database.

A bare aiohttp sender signs every body the way tidings does (``signature_headers``) and
POSTs it, ``concurrency`` at a time, into ``bench/receiver.py``: nothing is stored,
scheduled or recorded. ``make bench`` and ``bench/inflight.py`` print tidings' figures as a
fraction of this one, measured in the same run.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from tidings.dispatcher.curl_sender import CurlSender  # noqa: E402
from tidings.dispatcher.sender import SenderOptions  # noqa: E402
from tidings.domain.signatures import generate_secret, signature_headers  # noqa: E402


def signed(i: int, secret: str) -> tuple[bytes, dict[str, str]]:
    event_id = f"evt_{i:012d}"
    body = json.dumps(
        {"id": event_id, "type": "client.created", "payload": {"i": i, "name": "Ada"}},
        separators=(",", ":"),
    ).encode()
    headers = signature_headers([secret], event_id, int(time.time()), body)
    return body, {**headers, "Content-Type": "application/json"}


async def bare_aiohttp(url: str, count: int, concurrency: int) -> float:
    """POSTs per second for ``count`` signed POSTs, ``concurrency`` in flight."""
    secret = generate_secret()
    numbers = iter(range(count))
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def sender() -> None:
            for i in numbers:
                body, headers = signed(i, secret)
                async with session.post(url, data=body, headers=headers) as response:
                    await response.content.read(16 * 1024)

        started = time.monotonic()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        return count / (time.monotonic() - started)


async def bare_curl(url: str, count: int, concurrency: int) -> float:
    """The same for tidings' libcurl sender on its own (no guard: the URL is a literal)."""
    secret = generate_secret()
    numbers = iter(range(count))
    sender = CurlSender(SenderOptions(30.0, concurrency))

    async def one_at_a_time() -> None:
        for i in numbers:
            body, headers = signed(i, secret)
            await sender.post(url, body, headers)

    try:
        started = time.monotonic()
        await asyncio.gather(*(one_at_a_time() for _ in range(concurrency)))
        return count / (time.monotonic() - started)
    finally:
        await sender.close()
