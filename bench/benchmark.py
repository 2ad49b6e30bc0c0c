"""tidings against a Celery + Redis + requests sender, on this machine, in one run.

Run: ``make bench`` or ``.venv/bin/python bench/benchmark.py [--db sqlite postgresql]``.

For each database it starts, as separate processes: a fast receiver (bench/receiver.py),
and tidings with ``--dispatchers`` dispatcher processes (default 2, one per core here):
SQLite as ``tidings serve --workers 2`` (the API in one process, two dispatchers beside
it), PostgreSQL as ``tidings serve`` with its dispatcher off plus ``tidings worker
--processes 2``.

* throughput: ``--events`` events are emitted through the API to ``--subs`` subscriptions
  created disabled (their deliveries wait, paused); once every process has started and
  idles, the subscriptions are enabled and the dispatchers drain the backlog (as the Celery
  baseline waits for its worker before enqueueing).
  deliveries/s = deliveries / (last receive - first receive).
* latency: the dispatchers idle, events are emitted through the API at ``--rate`` per second
  for ``--seconds`` (after 2 s of the same to warm connection pools); each payload
  carries its send time, the receiver measures emit -> receive. p50/p95/p99.
* memory: peak RSS of the API and worker processes over the run.
* backlog (``--backlog N``): N events are bulk-inserted, then the worker drains for
  ``--backlog-seconds``; its RSS is sampled to show it stays flat.

The Celery baseline sends the same number of deliveries, signed the same way, to the same
receiver (bench/celery_baseline.py); so does a bare aiohttp sender with no database
(bench/senders.py), the ceiling for a Python sender on this machine. Every loop is bounded
in count and time, and only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]


from bench import harness  # noqa: E402
from bench.celery_baseline import free_port, percentile, run_celery_baseline  # noqa: E402
from bench.senders import bare_aiohttp, bare_curl  # noqa: E402


@dataclass
class Result:
    name: str
    deliveries_per_s: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    rss_mb: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    share: float | None = None
    """Of the bare sender's deliveries/s, same round (tidings rows)."""
    ratio: float | None = None
    """Multiple of the Celery baseline, where it is not this round's (the medians)."""


def _workers(parent: psutil.Process) -> list[psutil.Process]:
    """The ``tidings worker`` children of ``parent`` (not, say, a script engine's)."""
    found = []
    for child in parent.children():
        with contextlib.suppress(psutil.Error):
            if "worker" in child.cmdline():
                found.append(child)
    return found


def _neighbour(name: str, cmdline: list[str]) -> str | None:
    """The group a process not started by tidings counts in, if any."""
    if name.startswith("postgres"):
        return "postgres"
    if any(part.endswith("receiver.py") for part in cmdline):
        return "receiver"
    return None


def cpu_note(before: dict[str, float], after: dict[str, float], count: int, what: str) -> str:
    per = ", ".join(
        f"{name} {(after[name] - before.get(name, 0.0)) * 1000 / count:.2f}" for name in after
    )
    return f"CPU ms per {what}: {per}"


class Sampler:
    """Peak RSS of a set of processes, sampled in the background of the asyncio loop."""

    def __init__(self) -> None:
        self.peaks: dict[str, float] = {}
        self.procs: dict[str, psutil.Process] = {}
        self.history: dict[str, list[tuple[float, float]]] = {}

    def watch(self, name: str, pid: int) -> None:
        self.procs[name] = psutil.Process(pid)

    async def watch_workers(self, name: str, count: int, *, parent_works: bool) -> None:
        """Watch the ``count`` worker children of process ``name`` (``worker --processes``,
        ``serve --workers``) as ``worker1``, ``worker2``, …; and the parent itself only if
        it does more than supervise."""
        parent = self.procs[name] if parent_works else self.procs.pop(name)
        async with asyncio.timeout(60):
            while len(workers := _workers(parent)) < count:  # noqa: ASYNC110 - another process
                await asyncio.sleep(0.1)
        for n, child in enumerate(workers, 1):
            self.procs[f"worker{n}"] = child

    def sample(self) -> None:
        for name, proc in list(self.procs.items()):
            try:
                rss = proc.memory_info().rss / 2**20
            except psutil.Error:
                continue
            self.peaks[name] = max(self.peaks.get(name, 0.0), rss)
            self.history.setdefault(name, []).append((time.monotonic(), rss))

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time used so far by each watched process (user + system), and by the
        processes around them: PostgreSQL's (all of them, summed) and the receiver. A
        process that ends between two readings is missing from the second: read it
        over a stretch where none does (the servers' connections stay open)."""
        used = {}
        for name, proc in self.procs.items():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                used[name] = times.user + times.system
        for proc in psutil.process_iter(["name", "cmdline", "cpu_times"]):
            group = _neighbour(proc.info["name"] or "", proc.info["cmdline"] or [])
            if group and proc.info["cpu_times"] is not None:
                times = proc.info["cpu_times"]
                used[group] = used.get(group, 0.0) + times.user + times.system
        return used

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sample()
            await asyncio.sleep(0.2)


async def emit_paced(api: aiohttp.ClientSession, rate: float, seconds: float) -> list[float]:
    """Emit at a fixed rate; each payload carries its send time for the receiver.

    Returns the API's response times (ms), to tell emit latency from delivery latency.
    """
    total = int(rate * seconds)
    answered: list[float] = []

    async def emit(i: int) -> None:
        sent = time.time()
        body = {"type": "lead.created", "payload": {"i": i, "sentAt": sent}}
        async with api.post("/api/v1/events", json=body) as response:
            assert response.status == 201, await response.text()
        answered.append((time.time() - sent) * 1000)

    start = time.monotonic()
    tasks = []
    for i in range(total):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(emit(i)))
    await asyncio.gather(*tasks)
    return sorted(answered)


TYPICAL_TRANSFORMATION = """
function handler(webhook) {
  const event = webhook.payload;
  webhook.payload = {type: event.type, timestamp: event.createdUtc, webhookId: event.id,
                     ...event.payload};
  if (webhook.payload.name === undefined) webhook.payload.name = "unknown";
  return webhook;
}
"""
"""A typical transformation (issue 14): a reshape to a flat body, and one conditional."""

SUBSCRIPTION_OPTIONS: dict[str, dict[str, Any]] = {
    "plain": {},
    "transformation": {"transformation": TYPICAL_TRANSFORMATION},
    "filter": {"filter": {"type": {"$in": ["client.created", "lead.created"]}}},
}
"""``--options``: what every subscription of a tidings run carries (all deliver every event)."""


async def _subscribe(
    api: aiohttp.ClientSession, rx: str, count: int, options: dict[str, Any]
) -> list[str]:
    """``count`` subscriptions to ``client.created``, disabled (what is emitted to them
    waits, paused, until they are enabled), and one enabled to ``lead.created`` for the
    latency run; returns the disabled ones' ids."""
    hooks = []
    for path, types, enabled in [("/hook", ["client.created"], False)] * count + [
        ("/latency", ["lead.created"], True)
    ]:
        body = {"url": f"{rx}{path}", "eventTypes": types, "enabled": enabled, **options}
        async with api.post("/api/v1/webhooks/subscriptions", json=body) as response:
            assert response.status == 201, await response.text()
            if not enabled:
                hooks.append((await response.json())["id"])
    return hooks


async def _ready(sampler: Sampler, seconds: float = 120) -> None:
    """Wait until every watched process has started: its CPU time grows by less than a
    tenth of a core over half a second (imports and set-up done, idling). The drain is
    measured with all dispatchers up, as the Celery baseline waits for its worker."""
    async with asyncio.timeout(seconds):
        before = sampler.cpu_seconds()
        while True:
            await asyncio.sleep(0.5)
            now = sampler.cpu_seconds()
            if all(now.get(name, 0) - before.get(name, 0) <= 0.05 for name in sampler.procs):
                return
            before = now


async def run_tidings(
    db: str, sender: str, args: argparse.Namespace, rx: str, work: Path, options: str = "plain"
) -> Result:
    work = work / f"{db}-{sender}-{options}"
    work.mkdir(parents=True, exist_ok=True)
    with harness.database(db, work) as url:
        return await _measure(url, db, sender, args, rx, work, options)


async def _measure(
    database_url: str,
    db: str,
    sender: str,
    args: argparse.Namespace,
    rx: str,
    work: Path,
    options: str,
) -> Result:
    """SQLite runs as ``tidings serve --workers`` (``--dispatchers`` of them beside the
    API); PostgreSQL as an API process plus ``tidings worker --processes`` (as many)."""
    workers = f", {args.dispatchers} dispatcher processes"
    extra = "" if options == "plain" else f", {options}"
    result = Result(f"tidings ({db}, {sender}{workers}{extra})")
    env = {**harness.tidings_env(database_url, work / "data"), "TIDINGS_SENDER": sender}
    key = await asyncio.to_thread(harness.create_key, env)
    total = args.events * args.subs
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api_only = {**env, "TIDINGS_DISPATCHER_ENABLED": "false"}
    serve = [*harness.TIDINGS, "serve", "--port", str(port)]
    sampler = Sampler()
    async with (
        harness.api_session(base, key) as api,
        httpx.AsyncClient(timeout=30) as client,
    ):
        stopper = asyncio.Event()
        sampling = asyncio.create_task(sampler.run(stopper))
        with contextlib.ExitStack() as stack:

            def start(name: str, args_: list[str], env_: dict[str, str]) -> None:
                proc = stack.enter_context(harness.process(args_, env_, work / f"{name}.log"))
                sampler.watch(name, proc.pid)

            if db == "sqlite":
                start("serve", [*serve, "--workers", str(args.dispatchers)], env)
                await sampler.watch_workers("serve", args.dispatchers, parent_works=True)
            else:
                start("api", serve, api_only)
                processes = ["--processes", str(args.dispatchers)]
                start("worker", [*harness.TIDINGS, "worker", *processes], env)
                if args.dispatchers > 1:
                    await sampler.watch_workers("worker", args.dispatchers, parent_works=False)
            await harness.wait_http(f"{base}/healthz")
            hooks = await _subscribe(api, rx, args.subs, SUBSCRIPTION_OPTIONS[options])
            rate = await harness.emit_many(api, args.events, "client.created")
            result.notes.append(f"API emit rate {rate:.0f} events/s (16 clients)")
            await _ready(sampler)
            await client.post(f"{rx}/reset")
            for sub_id in hooks:  # the backlog, waiting paused, is let go
                patch = {"enabled": True}
                async with api.patch(f"/api/v1/webhooks/subscriptions/{sub_id}", json=patch) as r:
                    assert r.status == 200, await r.text()
            # CPU from the first delivery on: the workers' start (imports) is not a cost
            # per delivery.
            first = await harness.wait_received(client, rx, 1, 60)
            cpu_before = sampler.cpu_seconds()
            stats = await harness.wait_received(client, rx, total, 900)
            drained = total - int(first["count"])
            result.notes.append(
                cpu_note(cpu_before, sampler.cpu_seconds(), drained, "delivery, draining")
            )
            result.deliveries_per_s = total / (stats["last"] - stats["first"])
            await harness.wait_http(f"{base}/healthz")
            await client.post(f"{rx}/reset")
            # Warm up (connection pools, prepared statements), then measure steady state.
            warm = await emit_paced(api, args.rate, 2)
            await harness.wait_received(client, rx, len(warm), 120)
            await client.post(f"{rx}/reset")
            cpu_before = sampler.cpu_seconds()
            emit_ms = await emit_paced(api, args.rate, args.seconds)
            stats = await harness.wait_received(client, rx, len(emit_ms), 120)
            result.notes.append(
                cpu_note(
                    cpu_before, sampler.cpu_seconds(), len(emit_ms), f"event at {args.rate:.0f}/s"
                )
            )
            result.notes.append(
                "emit API response p50/p99 "
                f"{percentile(emit_ms, 50):.1f}/{percentile(emit_ms, 99):.1f} ms"
            )
            latencies = sorted(stats["latencies_ms"])
            result.p50_ms, result.p95_ms, result.p99_ms = (
                percentile(latencies, q) for q in (50, 95, 99)
            )
        stopper.set()
        await sampling
    result.rss_mb = dict(sampler.peaks)
    return result


def run_celery(url: str, total: int) -> Result:
    figures = run_celery_baseline(url, total)
    result = Result("celery + redis + requests")
    result.deliveries_per_s = figures["deliveries_per_s"]
    result.p50_ms, result.p95_ms, result.p99_ms = (
        figures["p50_ms"],
        figures["p95_ms"],
        figures["p99_ms"],
    )
    result.rss_mb = {"worker tree": figures["worker_rss_mb"]}
    result.notes.append("latency = enqueue of a full backlog -> POST, not paced")
    return result


def print_table(results: list[Result], baseline: Result | None) -> None:
    print()
    columns = ["deliveries/s", "x celery", "p50 ms", "p95 ms", "p99 ms"]
    print(f"{'sender':34s} " + " ".join(f"{c:>12s}" for c in columns) + "  peak RSS MB")
    for r in results:
        ratio = "-"
        if r.ratio is not None:
            ratio = f"{r.ratio:.1f}x"
        elif baseline and baseline.deliveries_per_s:
            ratio = f"{r.deliveries_per_s / baseline.deliveries_per_s:.1f}x"
        rss = ", ".join(f"{k} {v:.0f}" for k, v in r.rss_mb.items())
        figures = [f"{r.deliveries_per_s:12.0f}", f"{ratio:>12s}"] + [
            f"{v:12.1f}" for v in (r.p50_ms, r.p95_ms, r.p99_ms)
        ]
        print(f"{r.name:34s} " + " ".join(figures) + f"  {rss}")
        for note in r.notes:
            print(f"{'':34s} {note}")


@contextmanager
def _workdir(keep: bool) -> Iterator[str]:
    if keep:
        path = tempfile.mkdtemp(prefix="tidings-bench-")
        print(f"work dir (kept): {path}")
        yield path
    else:
        with tempfile.TemporaryDirectory(prefix="tidings-bench-") as path:
            yield path


def main() -> None:
    parser = harness.arguments(__doc__)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--subs", type=int, default=2)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--sender", nargs="+", default=["curl", "aiohttp"], choices=["curl", "aiohttp"]
    )
    parser.add_argument(
        "--dispatchers",
        type=int,
        default=2,
        help="dispatcher processes, about one per core: SQLite runs serve --workers N, "
        "PostgreSQL an API process and tidings worker --processes N",
    )
    parser.add_argument(
        "--options",
        nargs="+",
        default=["plain"],
        choices=list(SUBSCRIPTION_OPTIONS),
        help="subscription options to run tidings with, each a run of its own: plain, "
        "transformation (a typical one: reshape + one conditional), filter (matching all)",
    )
    parser.add_argument("--no-celery", action="store_true")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run everything this many times, then print each row's median (and its p99's "
        "range): on a shared machine one run's latency tail is mostly its neighbours'",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    args = parser.parse_args()
    rounds = []
    for n in range(args.rounds):
        if args.rounds > 1:
            print(f"\nround {n + 1} of {args.rounds}", flush=True)
        rounds.append(one_round(args))
        print_table(*rounds[-1])
    if args.rounds > 1:
        print(f"\nmedian of {args.rounds} rounds (each row against the Celery of its own round)")
        print_table(*medians(rounds))


def one_round(args: argparse.Namespace) -> tuple[list[Result], Result | None]:
    """Every sender, measured once, in one run: the results and the Celery baseline."""
    with (
        _workdir(args.keep) as tmp,
        harness.process(
            [harness.PYTHON, str(ROOT / "bench" / "receiver.py"), str(port := free_port())],
            dict(os.environ),
            Path(tmp) / "receiver.log",
        ),
    ):
        rx = f"http://127.0.0.1:{port}"
        asyncio.run(harness.wait_http(f"{rx}/stats"))
        results = []
        baseline = None
        if not args.no_celery:
            baseline = run_celery(f"{rx}/hook", args.events * args.subs)
            results.append(baseline)
        ceiling = Result("bare aiohttp sender (no DB)")
        ceiling.deliveries_per_s = asyncio.run(
            bare_aiohttp(f"{rx}/bare", args.events * args.subs, 200)
        )
        ceiling.notes.append("the same signed POSTs, 200 in flight: nothing stored")
        results.append(ceiling)
        curl = Result("bare curl sender (no DB)")
        curl.deliveries_per_s = asyncio.run(bare_curl(f"{rx}/bare", args.events * args.subs, 200))
        curl.notes.append("tidings' CurlSender alone, the same POSTs")
        results.append(curl)
        ceilings = {"aiohttp": ceiling, "curl": curl}
        for db, sender, options in itertools.product(args.db, args.sender, args.options):
            result = asyncio.run(run_tidings(db, sender, args, rx, Path(tmp), options))
            result.share = result.deliveries_per_s / ceilings[sender].deliveries_per_s
            result.notes.insert(0, f"{result.share:.0%} of the bare {sender} sender")
            results.append(result)
    total = args.events * args.subs
    print(
        f"\n{args.events} events x {args.subs} subscriptions = {total} deliveries; "
        f"latency at {args.rate:.0f} events/s for {args.seconds:.0f} s; {os.cpu_count()} CPUs"
    )
    return results, baseline


def medians(
    rounds: list[tuple[list[Result], Result | None]],
) -> tuple[list[Result], Result | None]:
    """Each row's median over the rounds. Throughput is taken as a multiple of the Celery
    baseline of its own round (its median is reported), so that a slow round slows both."""
    summary = []
    for rows in zip(*(results for results, _ in rounds), strict=True):
        ratios = [
            row.deliveries_per_s / (base.deliveries_per_s if base else 1.0)
            for row, (_, base) in zip(rows, rounds, strict=True)
        ]
        p99s = sorted(row.p99_ms for row in rows)
        median = Result(
            rows[0].name,
            deliveries_per_s=statistics.median(row.deliveries_per_s for row in rows),
            p50_ms=statistics.median(row.p50_ms for row in rows),
            p95_ms=statistics.median(row.p95_ms for row in rows),
            p99_ms=statistics.median(p99s),
            rss_mb={k: max(row.rss_mb.get(k, 0.0) for row in rows) for k in rows[0].rss_mb},
        )
        median.ratio = statistics.median(ratios) if rounds[0][1] else None
        if rows[0].share is not None:
            shares = statistics.median(row.share or 0.0 for row in rows)
            median.notes.append(f"{shares:.0%} of its bare sender (median)")
        if p99s[-1]:
            median.notes.append(f"p99 over the rounds: {', '.join(f'{p:.0f}' for p in p99s)} ms")
        summary.append(median)
    return summary, None


if __name__ == "__main__":
    main()
