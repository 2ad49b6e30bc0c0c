"""Thousands in flight: one worker holding 5,000 attempts to receivers that answer after 1 s.

Run: ``.venv/bin/python bench/inflight.py [--db sqlite postgresql] [--in-flight 5000]
[--rounds 3]``.

A backlog of deliveries to ``/slow/1000`` (the receiver answers each after a second) is
bulk-inserted; one delivering process (``tidings serve`` on SQLite, ``tidings worker`` on
PostgreSQL) sized for ``--in-flight`` attempts drains it for ``--seconds``. Its RSS is
sampled, and deliveries per second are counted over the last half of the run (the
adaptive limits take a few seconds to open up from 8 in flight). In the same run, the bare
aiohttp and curl senders (``bench/senders.py``) send to the same slow receiver with as many
in flight: the sender, not the scheduler, should be the limit. This machine's speed drifts
by a quarter over minutes, so the run is made of ``--rounds`` rounds, each measuring the
bare curl sender just before each database's run, and reports each run's ratio to it and
their median. Bounded in count and time; only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from bench import harness  # noqa: E402
from bench.backlog import fill, sample_delivering  # noqa: E402
from bench.senders import bare_aiohttp, bare_curl  # noqa: E402
from tidings.domain.scheduling import RESERVE_SHARE  # noqa: E402


@dataclass(frozen=True)
class Drained:
    rate: float
    """Deliveries per second over the second half of the run."""
    peak_mb: float
    cpu_ms: float
    """CPU ms the delivering process used per delivery, over the second half."""


async def drain(args: argparse.Namespace, db: str, url: str, work: Path, rx: str) -> Drained:
    env = harness.tidings_env(url, work / "data", new_key=True)
    # One tenant may fill all but the reserve kept for light tenants: size the worker so
    # that what one tenant can hold is --in-flight.
    capacity = math.ceil(args.in_flight / (1 - RESERVE_SHARE))
    env.update(
        TIDINGS_DISPATCHER_CONCURRENCY=str(capacity),
        TIDINGS_SUBSCRIPTION_CONCURRENCY=str(args.in_flight),
        TIDINGS_DELIVERY_TIMEOUT="30",
    )
    backlog = int(args.in_flight * (args.seconds + 5))
    await fill(env, f"{rx}/slow/1000/tidings", backlog)
    samples = await sample_delivering(db, env, work, rx, args.seconds)
    half = [s for s in samples if s.elapsed >= args.seconds / 2]
    first, last = half[0], half[-1]
    delivered = last.delivered - first.delivered
    found = Drained(
        rate=delivered / (last.elapsed - first.elapsed),
        peak_mb=max(s.rss_mb for s in samples),
        cpu_ms=1000 * (last.cpu_s - first.cpu_s) / max(1, delivered),
    )
    print(
        f"{db}: {found.rate:.0f} deliveries/s over the second half, {found.cpu_ms:.2f} CPU ms "
        f"each, peak RSS {found.peak_mb:.0f} MB",
        flush=True,
    )
    return found


async def bare_curl_measured(url: str, total: int, in_flight: int) -> tuple[float, float]:
    """The bare curl sender's POSTs/s, and the CPU ms this process spent per POST."""
    cpu = time.process_time()
    rate = await bare_curl(url, total, in_flight)
    return rate, 1000 * (time.process_time() - cpu) / total


async def run(args: argparse.Namespace) -> None:
    runs: dict[str, list[tuple[Drained, float, float]]] = {db: [] for db in args.db}
    """Per database, each run and the bare curl sender's POSTs/s and CPU ms just before."""
    with tempfile.TemporaryDirectory(prefix="tidings-inflight-") as tmp:
        async with harness.fast_receiver({}, Path(tmp) / "receiver.log") as rx:
            total = int(args.in_flight * args.seconds / 2)
            aiohttp_rate = await bare_aiohttp(f"{rx}/slow/1000/bare", total, args.in_flight)
            print(f"bare aiohttp sender: {aiohttp_rate:.0f} POSTs/s, {args.in_flight} in flight")
            for round_ in range(1, args.rounds + 1):
                place = Path(tmp) / f"round-{round_}"
                place.mkdir()
                for db, work, url in harness.each_database(args.db, place):
                    # The machine's speed drifts over minutes: each run of tidings is
                    # compared with the ceiling measured just before it.
                    bare, bare_cpu = await bare_curl_measured(
                        f"{rx}/slow/1000/bare", total, args.in_flight
                    )
                    print(f"round {round_}: bare curl sender {bare:.0f} POSTs/s", flush=True)
                    runs[db].append((await drain(args, db, url, work, rx), bare, bare_cpu))
    print(f"\n{args.in_flight} in flight to receivers answering after 1 s, {args.rounds} rounds:")
    print(f"  bare aiohttp sender (no DB)   {aiohttp_rate:7.0f} deliveries/s")
    bares = [bare for db in args.db for _, bare, _ in runs[db]]
    bare_cpus = [cpu for db in args.db for _, _, cpu in runs[db]]
    print(
        f"  bare curl sender (no DB)      {_spread(bares)} deliveries/s (tidings' default), "
        f"{statistics.median(bare_cpus):.2f} CPU ms each"
    )
    for db in args.db:
        ratios = ", ".join(f"{d.rate / bare:.0%}" for d, bare, _ in runs[db])
        median = statistics.median(d.rate / bare for d, bare, _ in runs[db])
        cpu = statistics.median(d.cpu_ms for d, _, _ in runs[db])
        print(
            f"  tidings ({db:10s})         {_spread([d.rate for d, _, _ in runs[db]])} "
            f"deliveries/s; of the bare curl sender just before: {ratios} (median "
            f"{median:.0%}); {cpu:.2f} CPU ms each; peak RSS "
            f"{max(d.peak_mb for d, _, _ in runs[db]):.0f} MB"
        )


def _spread(values: list[float]) -> str:
    """The median of ``values`` and their range."""
    return f"{statistics.median(values):7.0f} ({min(values):.0f}-{max(values):.0f})"


def main() -> None:
    args = harness.arguments(__doc__, in_flight=5000, seconds=30.0, rounds=3).parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
