"""Noisy neighbours: no tenant, endpoint or backlog holds anyone else back.

Run: ``.venv/bin/python bench/fairness.py [--db sqlite postgresql] [--scenario ...]
[--baseline-rev REV] [--sender curl|aiohttp]``.

Each scenario runs on a fresh database with the processes a user would run: ``tidings
serve`` on SQLite; an API process and one ``tidings worker`` on PostgreSQL. Receivers
are ``bench/receiver.py`` paths on 127.0.0.1 (``/slow/1000`` answers after a second,
``/hang`` never answers); latency is emit -> receive, from a send time in the payload.

* ``slow``: tenant A has 6 subscriptions to a receiver that answers after 1 s and emits
  3,000 events at once (18,000 deliveries). Then tenant B, whose one subscription goes
  to a fast receiver, emits an event every 200 ms for 10 s. Reported: B's p50/p99.
* ``hanging``: 5 subscriptions to a URL that never answers beside 1 healthy one, all to
  the same event type; 300 events at 50/s, with ``TIDINGS_DELIVERY_TIMEOUT`` 3 and 10.
  Reported: the healthy subscription's p50/p99.
* ``backlog``: tenant A has ``--backlog`` due deliveries (bulk-inserted; default
  1,000,000) to a receiver answering after 1 s; then tenant B as in ``slow``.

Targets (issue 11): B's p99 and the healthy subscription's p99 under 100 ms.
``--baseline-rev`` runs the ``slow`` and ``hanging`` scenarios again on another commit
(checked out in a temporary git worktree) in the same run, for a before/after ratio.
Every load is bounded in count and time; only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from bench import harness  # noqa: E402
from bench.backlog import fill  # noqa: E402
from bench.celery_baseline import free_port, percentile  # noqa: E402

PROBE_EVERY = 0.1
PROBE_SECONDS = 20.0


@dataclass
class Figures:
    scenario: str
    db: str
    code: str
    p50_ms: float
    p99_ms: float
    count: int
    expected: int
    note: str = ""
    emits: str = ""


@dataclass
class Setup:
    """One database and the tidings processes on it."""

    db: str
    database_url: str
    env: dict[str, str]
    base: str
    work: Path


async def subscribe(api: aiohttp.ClientSession, url: str, types: list[str]) -> None:
    async with api.post(
        "/api/v1/webhooks/subscriptions", json={"url": url, "eventTypes": types}
    ) as r:
        assert r.status == 201, await r.text()


async def emit(api: aiohttp.ClientSession, event_type: str, payload: dict[str, Any]) -> float:
    """Emit one event; returns the API's response time in ms."""
    started = time.monotonic()
    async with api.post("/api/v1/events", json={"type": event_type, "payload": payload}) as r:
        assert r.status == 201, await r.text()
    return (time.monotonic() - started) * 1000


async def emit_at_once(api: aiohttp.ClientSession, count: int, event_type: str) -> None:
    pending = list(range(count))

    async def client() -> None:
        while pending:
            await emit(api, event_type, {"i": pending.pop()})

    await asyncio.gather(*(client() for _ in range(16)))


async def emit_paced(
    api: aiohttp.ClientSession, event_type: str, every: float, seconds: float
) -> list[float]:
    """Emit one event every ``every`` seconds, each carrying its send time; returns the
    API's response times (ms), to tell a slow emit from a slow delivery."""
    total = int(seconds / every)
    start = time.monotonic()
    tasks = []
    for i in range(total):
        delay = start + i * every - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        payload = {"i": i, "sentAt": time.time()}
        tasks.append(asyncio.create_task(emit(api, event_type, payload)))
    return sorted(await asyncio.gather(*tasks))


async def path_stats(rx: str, path: str, expected: int, seconds: float) -> dict[str, Any]:
    """The receiver's figures for ``path`` once ``expected`` arrived (or ``seconds`` passed)."""
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient() as client:
        while True:
            stats = (await client.get(f"{rx}/stats")).json()["paths"].get(path, {})
            if stats.get("count", 0) >= expected or time.monotonic() > deadline:
                return {
                    "count": stats.get("count", 0),
                    "latencies_ms": stats.get("latencies_ms", []),
                }
            await asyncio.sleep(0.1)


def figures(
    scenario: str, setup: Setup, code: str, stats: dict[str, Any], answered: list[float]
) -> Figures:
    latencies = sorted(stats["latencies_ms"])
    p50 = percentile(latencies, 50) if latencies else float("nan")
    p99 = percentile(latencies, 99) if latencies else float("nan")
    found = Figures(scenario, setup.db, code, p50, p99, stats["count"], len(answered))
    found.emits = (
        f"emit answered p50/p99 {percentile(answered, 50):.0f}/{percentile(answered, 99):.0f} ms"
    )
    if os.environ.get("FAIRNESS_DEBUG"):
        print(
            "slowest:",
            [round(x) for x in latencies[-8:]],
            "emits:",
            [round(x) for x in answered[-8:]],
        )
    return found


@contextlib.contextmanager
def tidings_running(setup: Setup, extra: dict[str, str]) -> Iterator[None]:
    env = {**setup.env, **extra}
    port = int(setup.base.rsplit(":", 1)[1])
    serve = [*harness.TIDINGS, "serve", "--port", str(port)]
    with contextlib.ExitStack() as stack:
        if setup.db == "sqlite":
            stack.enter_context(harness.process(serve, env, setup.work / "serve.log"))
        else:
            api_only = {**env, "TIDINGS_DISPATCHER_ENABLED": "false"}
            stack.enter_context(harness.process(serve, api_only, setup.work / "api.log"))
            stack.enter_context(
                harness.process([*harness.TIDINGS, "worker"], env, setup.work / "worker.log")
            )
        yield


async def probe_tenant_b(setup: Setup, rx: str, code: str, scenario: str) -> Figures:
    key_b = await asyncio.to_thread(harness.create_key, setup.env, "tenant-b")
    path = f"/b-{scenario}-{setup.db}-{code}"
    async with harness.api_session(setup.base, key_b) as b:
        await subscribe(b, f"{rx}{path}", ["lead.created"])
        answered = await emit_paced(b, "lead.created", PROBE_EVERY, PROBE_SECONDS)
    stats = await path_stats(rx, path, len(answered), 30)
    return figures(scenario, setup, code, stats, answered)


async def slow(setup: Setup, rx: str, code: str) -> list[Figures]:
    key_a = await asyncio.to_thread(harness.create_key, setup.env, "tenant-a")
    with tidings_running(setup, {}):
        await harness.wait_http(f"{setup.base}/healthz")
        async with harness.api_session(setup.base, key_a) as a:
            for n in range(6):
                await subscribe(a, f"{rx}/slow/1000/a{n}", ["client.created"])
            await emit_at_once(a, 3000, "client.created")
        return [await probe_tenant_b(setup, rx, code, "slow")]


async def hanging(setup: Setup, rx: str, code: str) -> list[Figures]:
    found = []
    for timeout in (3, 10):
        key = await asyncio.to_thread(harness.create_key, setup.env, f"tenant-hang-{timeout}")
        with tidings_running(setup, {"TIDINGS_DELIVERY_TIMEOUT": str(timeout)}):
            await harness.wait_http(f"{setup.base}/healthz")
            event_type = "payment.succeeded"
            async with harness.api_session(setup.base, key) as api:
                for n in range(5):
                    await subscribe(api, f"{rx}/hang/{timeout}/{n}", [event_type])
                healthy = f"/healthy-{timeout}-{setup.db}-{code}"
                await subscribe(api, f"{rx}{healthy}", [event_type])
                answered = await emit_paced(api, event_type, 1 / 50, 6.0)
            stats = await path_stats(rx, healthy, len(answered), 60)
            result = figures("hanging", setup, code, stats, answered)
            result.note = f"timeout {timeout} s"
            found.append(result)
    return found


async def backlog(setup: Setup, rx: str, code: str, size: int) -> list[Figures]:
    started = time.monotonic()
    await fill(setup.env, f"{rx}/slow/1000/backlog", size)
    note = f"{size} due deliveries inserted in {time.monotonic() - started:.0f} s"
    with tidings_running(setup, {}):
        await harness.wait_http(f"{setup.base}/healthz")
        result = await probe_tenant_b(setup, rx, code, "backlog")
    result.note = note
    return [result]


async def run_scenarios(
    args: argparse.Namespace, rx: str, work: Path, code: str, src: Path
) -> list[Figures]:
    found: list[Figures] = []
    for db in args.db:
        for scenario in args.scenario:
            if code != "HEAD" and scenario == "backlog":
                continue
            place = work / f"{code}-{db}-{scenario}"
            place.mkdir(parents=True)
            with harness.database(db, place) as url:
                env = harness.tidings_env(url, place / "data", new_key=True)
                env["PYTHONPATH"] = str(src)
                env["TIDINGS_SENDER"] = args.sender  # older commits ignore it
                setup = Setup(db, url, env, f"http://127.0.0.1:{free_port()}", place)
                print(f"-- {code} {db} {scenario}", flush=True)
                if scenario == "slow":
                    found += await slow(setup, rx, code)
                elif scenario == "hanging":
                    found += await hanging(setup, rx, code)
                else:
                    found += await backlog(setup, rx, code, args.backlog)
    return found


@contextlib.contextmanager
def worktree(rev: str, work: Path) -> Iterator[Path]:
    path = work / f"tree-{rev}"
    subprocess.run(["git", "worktree", "add", "--detach", str(path), rev], cwd=ROOT, check=True)
    try:
        yield path / "src"
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False)


def print_table(found: list[Figures]) -> None:
    head = ["scenario".ljust(10), "db".ljust(11), "code".ljust(10), "p50 ms".rjust(9)]
    print("\n" + " ".join([*head, "p99 ms".rjust(9), "received".rjust(10)]) + "  note")
    for f in found:
        print(
            f"{f.scenario:10s} {f.db:11s} {f.code:10s} {f.p50_ms:9.1f} {f.p99_ms:9.1f} "
            f"{f.count:5d}/{f.expected:<4d}  {f.note} ({f.emits})"
        )
    for f in found:
        if f.code == "HEAD":
            continue
        mine = next(
            (
                h
                for h in found
                if h.code == "HEAD" and (h.scenario, h.db, h.note) == (f.scenario, f.db, f.note)
            ),
            None,
        )
        if mine is not None and mine.p99_ms:
            ratio = f.p99_ms / mine.p99_ms
            print(f"{f.scenario} {f.db} {f.note}: p99 {ratio:.0f}x lower ({f.code} -> HEAD)")


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="tidings-fairness-") as tmp:
        work = Path(tmp)
        async with harness.fast_receiver(dict(os.environ), work / "receiver.log") as rx:
            found = await run_scenarios(args, rx, work, "HEAD", ROOT / "src")
            if os.environ.get("FAIRNESS_KEEP"):
                import shutil

                shutil.copytree(work, "/tmp/fairness-kept", dirs_exist_ok=True)
            if args.baseline_rev:
                with worktree(args.baseline_rev, work) as src:
                    found += await run_scenarios(args, rx, work, args.baseline_rev, src)
    print_table(found)


def main() -> None:
    parser = harness.arguments(__doc__)
    parser.add_argument("--scenario", nargs="+", default=["slow", "hanging", "backlog"])
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument("--baseline-rev", help="also run slow and hanging on this commit")
    parser.add_argument("--sender", default="curl", choices=["curl", "aiohttp"])
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
