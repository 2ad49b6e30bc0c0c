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
import subprocess
import time
from pathlib import Path

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
from tests.support.streams import Stream, check_outcome, readiness, started, subscribe

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("outage", [6, 30])
async def test_postgres_stopped_mid_stream_loses_nothing(
    outage: float, tmp_path: Path, receiver: Receiver
) -> None:
    with postgres.own_cluster(crash_safe=True) as server:
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
