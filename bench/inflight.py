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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from bench import harness  # noqa: E402
from bench.backlog import fill, sample_delivering  # noqa: E402
from bench.senders import bare_aiohttp, bare_curl  # noqa: E402
from tidings.domain.scheduling import RESERVE_SHARE  # noqa: E402


async def drain(
    args: argparse.Namespace, db: str, url: str, work: Path, rx: str
) -> tuple[float, float]:
    """Deliveries/s over the second half of the run, and the peak RSS in MB."""
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
    half = [s for s in samples if s[0] >= args.seconds / 2]
    rate = (half[-1][2] - half[0][2]) / (half[-1][0] - half[0][0])
    peak = max(rss for _, rss, _ in samples)
    print(f"{db}: {rate:.0f} deliveries/s over the second half, peak RSS {peak:.0f} MB")
    return rate, peak


async def run(args: argparse.Namespace) -> None:
    rates: dict[str, list[float]] = {db: [] for db in args.db}
    ratios: dict[str, list[float]] = {db: [] for db in args.db}
    peaks: dict[str, list[float]] = {db: [] for db in args.db}
    bares: list[float] = []
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
                    bare = await bare_curl(f"{rx}/slow/1000/bare", total, args.in_flight)
                    bares.append(bare)
                    print(f"round {round_}: bare curl sender {bare:.0f} POSTs/s", flush=True)
                    rate, peak = await drain(args, db, url, work, rx)
                    rates[db].append(rate)
                    ratios[db].append(rate / bare)
                    peaks[db].append(peak)
    print(f"\n{args.in_flight} in flight to receivers answering after 1 s, {args.rounds} rounds:")
    print(f"  bare aiohttp sender (no DB)   {aiohttp_rate:7.0f} deliveries/s")
    print(f"  bare curl sender (no DB)      {_spread(bares)} deliveries/s (tidings' default)")
    for db in args.db:
        each = ", ".join(f"{r:.0%}" for r in ratios[db])
        print(
            f"  tidings ({db:10s})         {_spread(rates[db])} deliveries/s; of the bare "
            f"curl sender just before: {each} (median {statistics.median(ratios[db]):.0%}); "
            f"peak RSS {max(peaks[db]):.0f} MB"
        )


def _spread(values: list[float]) -> str:
    """The median of ``values`` and their range."""
    return f"{statistics.median(values):7.0f} ({min(values):.0f}-{max(values):.0f})"


def main() -> None:
    args = harness.arguments(__doc__, in_flight=5000, seconds=30.0, rounds=3).parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
