"""Deliveries per second from tidings' dispatcher to a local receiver, against a baseline.

Run: ``make bench`` (or ``.venv/bin/python bench/throughput.py --events 2000 --subs 2``).

Both senders POST the same signed envelopes to the same receiver process on 127.0.0.1:
  * baseline: a hand-rolled sequential sender (httpx, one request at a time, one DB
    update per delivery) — what a cron job or a simple background task does;
  * tidings: events emitted into SQLite, then the dispatcher (claim -> sign -> POST ->
    record, batched) drains the backlog.
Prints deliveries/s for each and the ratio. Bounded: at most --events x --subs requests.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

from tidings.config import Settings
from tidings.domain.deliveries import DeliveryStatus
from tidings.domain.events import Envelope
from tidings.domain.signatures import generate_secret, signature_headers
from tidings.logs import configure_logging
from tidings.service import Tidings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_receiver() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("receiver.py")), str(port)]
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.post(f"http://127.0.0.1:{port}/ready", timeout=1)
            return proc, f"http://127.0.0.1:{port}/hook"
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("receiver did not start")


def baseline(url: str, total: int, workdir: Path) -> float:
    """Sequential: sign, POST, record one row per delivery in SQLite."""
    secret = generate_secret()
    db = sqlite3.connect(workdir / "baseline.db")
    db.execute("CREATE TABLE log (id TEXT, status INTEGER)")
    started = time.perf_counter()
    with httpx.Client(timeout=10) as client:
        for i in range(total):
            env = Envelope(f"evt_{i}", "client.created", int(time.time() * 1000), "t", {"i": i})
            body = env.to_json().encode()
            headers = signature_headers([secret], env.id, int(time.time()), body)
            response = client.post(url, content=body, headers=headers)
            db.execute("INSERT INTO log VALUES (?, ?)", (env.id, response.status_code))
            db.commit()
    return total / (time.perf_counter() - started)


async def tidings_run(url: str, events: int, subs: int, workdir: Path) -> tuple[float, float]:
    settings = Settings(
        database_url=f"sqlite:///{workdir / 'tidings.db'}",
        data_dir=workdir,
        env="development",
        encryption_key=Fernet.generate_key().decode(),
        dispatcher_poll_interval=0.05,
    )
    tidings = Tidings.from_settings(settings)
    await tidings.store.migrate()
    key, _ = await tidings.create_api_key("bench", ["admin"])
    for _ in range(subs):
        await tidings.create_subscription(key.tenant_id, url, ["client.*"])
    started = time.perf_counter()
    for i in range(events):
        await tidings.emit(key.tenant_id, "client.created", {"i": i, "name": "Ada Lovelace"})
    emit_rate = events / (time.perf_counter() - started)

    total = events * subs
    stop = asyncio.Event()
    started = time.perf_counter()
    worker = asyncio.create_task(tidings.run_dispatcher(stop))
    async with asyncio.timeout(600):
        while True:
            done = (await tidings.store.delivery_counts()).get(DeliveryStatus.SUCCEEDED, 0)
            if done >= total:
                break
            await asyncio.sleep(0.05)
    rate = total / (time.perf_counter() - started)
    stop.set()
    await worker
    await tidings.close()
    return emit_rate, rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--subs", type=int, default=2)
    args = parser.parse_args()
    configure_logging(development=True)
    receiver, url = start_receiver()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            base = baseline(url, args.events * args.subs, work)
            emit_rate, rate = asyncio.run(tidings_run(url, args.events, args.subs, work))
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)
    total = args.events * args.subs
    print(f"deliveries: {total} ({args.events} events x {args.subs} subscriptions), SQLite")
    print(f"baseline sequential sender : {base:8.0f} deliveries/s")
    print(f"tidings dispatcher         : {rate:8.0f} deliveries/s  ({rate / base:.1f}x baseline)")
    print(f"tidings emit (in-process)  : {emit_rate:8.0f} events/s")


if __name__ == "__main__":
    main()
