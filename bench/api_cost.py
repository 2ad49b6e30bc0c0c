"""CPU per API request, in process: where an emit's cost goes, and what the fast path saves.

Run: ``.venv/bin/python bench/api_cost.py [--requests 2000] [--rounds 3]``

The app is driven over ASGI directly (no sockets, so the HTTP server's own parsing is not
counted), on SQLite in a temporary directory, with the dispatcher off. For each round and
each case it measures the process's CPU time (all threads: the SQLite writer included)
over ``--requests`` sequential requests, cases interleaved so that a busy machine slows
them alike; it prints the median round. Cases:

* ``emit, service only``: ``Tidings.emit`` called directly: storing the event, no HTTP.
* ``emit, 16 at once``: the same, 16 awaited together (as 16 clients would): the writes
  that queue while one commits are committed as a group (per emit).
* ``emit, fast path``: ``POST /api/v1/events`` as served (``tidings/api/fast_emit.py``).
* ``emit, FastAPI route``: the same request with the fast path off.
* ``GET /healthz``: the least a request through FastAPI costs here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from tidings.app import create_app  # noqa: E402
from tidings.config import Settings  # noqa: E402
from tidings.logs import configure_logging  # noqa: E402
from tidings.service import Tidings  # noqa: E402

ASGIApp = Callable[..., Awaitable[None]]
EMIT = {"type": "client.created", "payload": {"name": "Ada", "n": 1}}
AT_ONCE = 16
"""Emits awaited together in the concurrent case: SQLite commits them in groups."""


def asgi_call(
    app: ASGIApp, method: str, path: str, headers: dict[str, str], body: bytes
) -> Callable[[], Awaitable[int]]:
    """A function that makes one request to ``app`` and answers its status."""
    raw_headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    raw_headers += [(b"host", b"tidings"), (b"content-length", str(len(body)).encode())]

    async def call() -> int:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": raw_headers,
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        return int(sent[0]["status"])

    return call


async def cpu_per_call(call: Callable[[], Awaitable[object]], count: int) -> float:
    """Microseconds of process CPU per call, over ``count`` sequential calls."""
    started = time.process_time()
    for _ in range(count):
        await call()
    return (time.process_time() - started) * 1e6 / count


async def measure(requests: int, rounds: int) -> dict[str, float]:
    configure_logging(False, "warning")
    with tempfile.TemporaryDirectory(prefix="tidings-api-cost-") as work:
        os.environ["TIDINGS_API_RATE_LIMIT"] = "0"
        settings = Settings(database_url=f"sqlite:///{work}/bench.db", data_dir=Path(work))
        tidings = Tidings.from_settings(settings)
        fast = create_app(tidings, run_dispatcher=False)
        route = create_app(tidings, run_dispatcher=False, fast_emit=False)
        async with fast.router.lifespan_context(fast):
            key, plaintext = await tidings.create_api_key("bench", ["admin"])
            headers = {"X-Api-Key": plaintext, "Content-Type": "application/json"}
            body = json.dumps(EMIT).encode()

            async def service_only() -> object:
                return await tidings.emit(key.tenant_id, EMIT["type"], EMIT["payload"])

            async def sixteen_at_once() -> object:
                return await asyncio.gather(*(service_only() for _ in range(AT_ONCE)))

            cases: dict[str, Callable[[], Awaitable[object]]] = {
                "emit, service only": service_only,
                f"emit, {AT_ONCE} at once": sixteen_at_once,
                "emit, fast path": asgi_call(fast, "POST", "/api/v1/events", headers, body),
                "emit, FastAPI route": asgi_call(route, "POST", "/api/v1/events", headers, body),
                "GET /healthz": asgi_call(fast, "GET", "/healthz", {}, b""),
            }
            for call in cases.values():  # warm up: caches, prepared statements
                await cpu_per_call(call, 100)
            samples: dict[str, list[float]] = {name: [] for name in cases}
            for _ in range(rounds):
                for name, call in cases.items():
                    calls = requests // AT_ONCE if call is sixteen_at_once else requests
                    per_call = await cpu_per_call(call, calls)
                    per_emit = per_call / AT_ONCE if call is sixteen_at_once else per_call
                    samples[name].append(per_emit)
            await tidings.close()
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    figures = asyncio.run(measure(args.requests, args.rounds))
    route = figures["emit, FastAPI route"]
    print(
        f"\nCPU per request, median of {args.rounds} rounds of {args.requests} "
        f"({os.cpu_count()} CPUs)"
    )
    for name, micros in figures.items():
        print(f"  {name:22s} {micros:8.0f} µs   {micros / route:5.2f}x the FastAPI route")


if __name__ == "__main__":
    main()
