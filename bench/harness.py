"""What the bench scripts share: the processes a user would run, the databases they run on,
the fast receiver, and the command line.

A bench script is run as ``.venv/bin/python bench/<script>.py``, so it first puts the
repository and ``src/`` on ``sys.path`` (two lines no module can do for it), then
``from bench import harness``. Everything here is bounded in time and contacts only
127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from cryptography.fernet import Fernet
from tests.support import postgres
from tests.support.processes import wait_or_kill

from bench.celery_baseline import free_port

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TIDINGS = [PYTHON, "-m", "tidings.cli"]


@contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            wait_or_kill(proc, 30)


@contextmanager
def database(db: str, work: Path) -> Iterator[str]:
    """The URL of a new database to run tidings on: ``sqlite`` (a file in ``work``) or
    ``postgresql`` (in a cluster of its own, gone on exit)."""
    if db == "sqlite":
        yield f"sqlite:///{work / 'tidings.db'}"
    else:
        with postgres.cluster() as server:
            yield postgres.create_database(server)


@contextlib.asynccontextmanager
async def fast_receiver(env: dict[str, str], log: Path) -> AsyncIterator[str]:
    """bench/receiver.py on a free port, once it answers; yields its base URL."""
    port = free_port()
    with process([PYTHON, str(ROOT / "bench" / "receiver.py"), str(port)], env, log):
        rx = f"http://127.0.0.1:{port}"
        await wait_http(f"{rx}/stats")
        yield rx


def command_line(description: str | None, **options: float | list[str]) -> argparse.ArgumentParser:
    """A bench script's parser: a ``--some-option`` for each ``some_option=default``, of the
    default's type (a list: one or more words)."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for name, default in options.items():
        flag = f"--{name.replace('_', '-')}"
        if isinstance(default, list):
            parser.add_argument(flag, nargs="+", default=default)
        else:
            parser.add_argument(flag, type=type(default), default=default)
    return parser


def arguments(description: str | None, **options: float | list[str]) -> argparse.ArgumentParser:
    """:func:`command_line` with ``--db`` first: the databases to run on, in turn."""
    return command_line(description, db=["sqlite", "postgresql"], **options)


def each_database(dbs: Iterable[str], tmp: Path) -> Iterator[tuple[str, Path, str]]:
    """Each of ``dbs`` in turn: its name, a work folder of its own in ``tmp``, and the URL
    of a new database there (dropped, with its cluster, before the next one starts)."""
    for db in dbs:
        work = tmp / db
        work.mkdir()
        with database(db, work) as url:
            yield db, work, url


def tidings_env(database_url: str, data_dir: Path, *, new_key: bool = False) -> dict[str, str]:
    """The environment of a tidings process on ``database_url``; with ``new_key``, a fresh
    ``TIDINGS_ENCRYPTION_KEY`` (for a script that writes encrypted rows itself)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env.update(
        TIDINGS_DATABASE_URL=database_url,
        TIDINGS_DATA_DIR=str(data_dir),
        TIDINGS_ENV="development",
        TIDINGS_ACCESS_LOG="false",
        TIDINGS_API_RATE_LIMIT="0",  # the benchmark measures capacity, not the per-key limit
        # BENCH_PYTHONPATH: more for tidings' processes (a sitecustomize that instruments them)
        PYTHONPATH=os.pathsep.join(
            filter(None, [str(ROOT / "src"), os.environ.get("BENCH_PYTHONPATH")])
        ),
    )
    # BENCH_TIDINGS_X=v: TIDINGS_X=v for tidings' processes, to measure a setting
    env.update((k[6:], v) for k, v in os.environ.items() if k.startswith("BENCH_TIDINGS_"))
    if new_key:
        env["TIDINGS_ENCRYPTION_KEY"] = Fernet.generate_key().decode()
    return env


async def wait_http(url: str, seconds: float = 30) -> None:
    async with httpx.AsyncClient() as client, asyncio.timeout(seconds):
        while True:
            try:
                await client.get(url)
                return
            except httpx.TransportError:
                await asyncio.sleep(0.1)


async def receiver_stats(client: httpx.AsyncClient, base: str) -> dict[str, Any]:
    return json.loads((await client.get(f"{base}/stats")).text)  # type: ignore[no-any-return]


async def wait_received(
    client: httpx.AsyncClient, base: str, total: int, seconds: float
) -> dict[str, Any]:
    async with asyncio.timeout(seconds):
        while True:
            stats = await receiver_stats(client, base)
            if int(stats["count"]) >= total:
                return stats
            await asyncio.sleep(0.05)


def api_session(base: str, key: str) -> aiohttp.ClientSession:
    """A session on tidings' API as ``key``. It drops idle connections before the server
    does (uvicorn closes them after 5 s), so a phase after a long drain does not send its
    first request down a connection the server has just closed."""
    connector = aiohttp.TCPConnector(keepalive_timeout=2)
    return aiohttp.ClientSession(base, headers={"X-Api-Key": key}, connector=connector)


async def emit_many(api: aiohttp.ClientSession, count: int, event_type: str) -> float:
    """Emit ``count`` events from 16 concurrent clients; returns events/s."""
    pending = list(range(count))

    async def client() -> None:
        while pending:
            body = {"type": event_type, "payload": {"i": pending.pop(), "name": "Ada"}}
            async with api.post("/api/v1/events", json=body) as response:
                assert response.status == 201, await response.text()

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(16)))
    return count / (time.monotonic() - started)


def create_key(env: dict[str, str], tenant: str = "bench") -> str:
    """A new admin key of ``tenant``, made by the CLI (blocking: run it in a thread)."""
    done = subprocess.run(
        [*TIDINGS, "keys", "create", "--tenant", tenant, "--scope", "admin"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return done.stdout.splitlines()[-1]
