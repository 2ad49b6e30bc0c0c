"""Faults in CI, bounded and on loopback: the database goes away mid-stream, and comes back.

PostgreSQL is stopped (``pg_ctl -m immediate``: clients see a crash) for 6 s and for 30 s
while an API process takes a stream of emits and two workers deliver; SQLite's files are
made immutable (``chattr +i``: root ignores ``chmod``) under ``tidings serve``. Nothing is
restarted by hand. Afterwards every acknowledged (201) event has arrived, emits during
the outage got 503 with ``Retry-After`` (never a 500), ``/readyz`` said 503 meanwhile,
and no process exited. Each test prints its figures: acknowledged, delivered, lost,
duplicated, and how long delivery took to resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support import postgres
from tests.support.processes import (
    Process,
    create_key,
    serve_on_free_port,
    tidings_env,
    wait_until_serving,
)
from tests.support.receiver import Receiver

pytestmark = pytest.mark.asyncio

EMIT_EVERY = 0.05
"""Seconds between two emits (20 a second)."""


@dataclass
class Stream:
    """A steady stream of emits, noting what the API answered."""

    acknowledged: list[int] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    retry_after: set[str] = field(default_factory=set)

    async def run(self, base: str, key: str, seconds: float) -> None:
        headers = {"X-Api-Key": key}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as client:
            deadline = time.monotonic() + seconds
            n = 0
            while time.monotonic() < deadline:
                body = {"type": "client.created", "payload": {"n": n}}
                try:
                    response = await client.post("/api/v1/events", json=body)
                except httpx.TransportError:
                    self.statuses[0] += 1
                else:
                    self.statuses[response.status_code] += 1
                    if response.status_code == 201:
                        self.acknowledged.append(n)
                    elif response.status_code == 503:
                        self.retry_after.add(response.headers.get("Retry-After", ""))
                n += 1
                await asyncio.sleep(EMIT_EVERY)


def arrived(receiver: Receiver) -> list[int]:
    return [json.loads(r.body)["payload"]["n"] for r in receiver.at("/chaos")]


async def subscribe(base: str, key: str, url: str) -> None:
    async with httpx.AsyncClient(base_url=base, headers={"X-Api-Key": key}) as client:
        body = {"url": url, "eventTypes": ["client.created"]}
        response = await client.post("/api/v1/webhooks/subscriptions", json=body)
        assert response.status_code == 201, response.text


async def readiness(base: str) -> int:
    async with httpx.AsyncClient(base_url=base) as client:
        return (await client.get("/readyz")).status_code


async def check_outcome(
    stream: Stream, receiver: Receiver, restored: float, processes: list[Process], what: str
) -> None:
    """Everything acknowledged arrives; report the figures the issue asks for."""
    acknowledged = set(stream.acknowledged)
    try:
        await receiver.wait_for(lambda: acknowledged <= set(arrived(receiver)), timeout=90)
    except TimeoutError:
        lost = sorted(acknowledged - set(arrived(receiver)))
        logs = "\n".join(f"--- {p.log.name}\n{p.log.read_text()[-4000:]}" for p in processes)
        pytest.fail(f"{what}: acknowledged but not delivered: {lost}\n{logs}")
    got = arrived(receiver)
    first_after = min(
        (r.at for r in receiver.at("/chaos") if r.at >= restored), default=float("nan")
    )
    duplicates = len(got) - len(set(got))
    print(
        f"\n{what}: emits {sum(stream.statuses.values())} ({dict(stream.statuses)}), "
        f"acknowledged {len(acknowledged)}, delivered {len(acknowledged & set(got))}, "
        f"lost {len(acknowledged - set(got))}, duplicated {duplicates}, "
        f"delivery resumed {first_after - restored:.1f} s after the database returned"
    )
    assert stream.statuses[500] == 0, "an outage must never answer 500"
    assert stream.statuses[503] > 0, "emits during the outage are refused with 503"
    assert stream.retry_after == {"5"}
    for process in processes:
        assert process.proc.poll() is None, f"{process.log.name} exited:\n{process.log.read_text()}"


@contextlib.asynccontextmanager
async def started(processes: list[Process]) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for process in processes:
            await asyncio.to_thread(process.stop)


@pytest.mark.parametrize("outage", [6, 30])
async def test_postgres_stopped_mid_stream_loses_nothing(
    outage: float, tmp_path: Path, receiver: Receiver
) -> None:
    with postgres.own_cluster() as server:
        url = postgres.create_database(server.url)
        env = tidings_env(tmp_path / "data", TIDINGS_DATABASE_URL=url)
        key = create_key(env)
        api_env = {**env, "TIDINGS_DISPATCHER_ENABLED": "false"}
        base, api = serve_on_free_port(api_env, tmp_path / "api.log")
        workers = [Process(["worker"], env, tmp_path / f"worker{n}.log") for n in range(2)]
        async with started([api, *workers]):
            await wait_until_serving(base, api)
            await subscribe(base, key, receiver.url("/chaos"))
            stream = Stream()
            emitting = asyncio.create_task(stream.run(base, key, outage + 8))
            await asyncio.sleep(3)
            await asyncio.to_thread(server.stop)
            await asyncio.sleep(min(2.0, outage / 2))
            assert await readiness(base) == 503
            await asyncio.sleep(outage - min(2.0, outage / 2))
            await asyncio.to_thread(server.start)
            restored = time.monotonic()
            await emitting
            await check_outcome(stream, receiver, restored, [api, *workers], f"PG {outage} s")
            assert await readiness(base) == 200


def immutable(paths: list[Path], on: bool) -> None:
    flag = "+i" if on else "-i"
    existing = [str(p) for p in paths if p.exists()]
    subprocess.run(["chattr", flag, *existing], check=True, capture_output=True, timeout=10)


async def test_sqlite_unwritable_answers_503_then_recovers(
    tmp_path: Path, receiver: Receiver
) -> None:
    database = tmp_path / "tidings.db"
    env = tidings_env(tmp_path / "data", TIDINGS_DATABASE_URL=f"sqlite:///{database}")
    key = create_key(env)
    base, serve = serve_on_free_port(env, tmp_path / "serve.log")
    files = [database, Path(f"{database}-wal")]
    async with started([serve]):
        await wait_until_serving(base, serve)
        await subscribe(base, key, receiver.url("/chaos"))
        stream = Stream()
        emitting = asyncio.create_task(stream.run(base, key, 14))
        await asyncio.sleep(3)
        try:
            immutable(files, on=True)
            await asyncio.sleep(6)
        finally:
            immutable(files, on=False)
        restored = time.monotonic()
        await emitting
        await check_outcome(stream, receiver, restored, [serve], "SQLite unwritable 6 s")
