"""A minimal fast receiver for benchmarks: answers 200 to every POST on 127.0.0.1.

Built on asyncio's Protocol and httptools' parser (as uvicorn is) so that the receiver
costs the 2-core machine as little CPU as possible: the benchmark measures senders.
It counts deliveries and, for bodies carrying ``"sentAt":<unix seconds>`` in their
payload, the emit-to-receive latency, in all and per path. ``GET /stats`` returns them;
``POST /reset`` clears them.

Paths choose the receiver's behaviour: ``/slow/<ms>/...`` answers after that many
milliseconds; ``/hang/...`` never answers (the connection stays open until the sender
gives up); any other path answers at once.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from typing import Any

import httptools
import uvloop

SENT_AT = re.compile(rb'"sentAt":([0-9.]+)')
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"


class Stats:
    def __init__(self) -> None:
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.latencies_ms: list[float] = []
        self.paths: dict[str, dict[str, Any]] = {}

    def record(self, path: bytes, body: bytes) -> None:
        now = time.time()
        self.count += 1
        self.first = self.first or now
        self.last = now
        mine = self.paths.setdefault(path.decode(), {"count": 0, "latencies_ms": []})
        mine["count"] += 1
        match = SENT_AT.search(body)
        if match:
            latency = (now - float(match.group(1))) * 1000
            self.latencies_ms.append(latency)
            mine["latencies_ms"].append(latency)

    def as_json(self) -> bytes:
        return json.dumps(
            {
                "count": self.count,
                "first": self.first,
                "last": self.last,
                "latencies_ms": self.latencies_ms,
                "paths": self.paths,
            }
        ).encode()


STATS = Stats()


class Receiver(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        global STATS
        assert self.transport is not None
        method = self.parser.get_method()
        if method == b"GET" and self.url == b"/stats":
            payload = STATS.as_json()
            head = f"HTTP/1.1 200 OK\r\ncontent-length: {len(payload)}\r\n"
            self.transport.write(
                head.encode() + b"content-type: application/json\r\n\r\n" + payload
            )
        elif self.url == b"/reset":
            STATS = Stats()
            self.transport.write(OK)
        elif self.url.startswith(b"/hang/"):
            pass  # never answer: the sender's timeout ends it
        elif self.url.startswith(b"/slow/"):
            ms = int(self.url.split(b"/")[2])
            answer = (self.transport, self.url, b"".join(self.body))
            asyncio.get_running_loop().call_later(ms / 1000, self._answer, *answer)
        else:
            STATS.record(self.url, b"".join(self.body))
            self.transport.write(OK)
        self.body = []

    @staticmethod
    def _answer(transport: asyncio.Transport, url: bytes, body: bytes) -> None:
        if not transport.is_closing():
            STATS.record(url, body)
            transport.write(OK)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Receiver, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
