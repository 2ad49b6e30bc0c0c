"""What one event and one delivery cost PostgreSQL: statements, transactions, rows, WAL
bytes and server CPU, measured on a throwaway cluster with pg_stat_statements.

Run: ``.venv/bin/python bench/db_cost.py [--events 2000] [--subs 2] [--rate 200]``.

``tidings serve`` (API only) takes ``--events`` emits from 16 clients, each to ``--subs``
subscriptions; then one ``tidings worker`` drains them into bench/receiver.py. Last, with
``tidings worker --processes N`` running (``--dispatchers``, 2: the benchmark's layout), events
are emitted at ``--rate`` per second for ``--seconds`` to one more subscription: what a paced event
costs, where each statement finds little to batch. Each phase is measured from the
server's own counters (pg_stat_statements, pg_stat_database, pg_current_wal_lsn, and the
CPU time of the postgres processes), so the figures hold whatever machine runs the Python
side. From the server CPU per delivery follows how many deliveries one primary core could
keep the books for: the "one primary" figure of docs/scaling.md. Loopback only; every
loop bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from tests.support import postgres  # noqa: E402

from bench import harness  # noqa: E402
from bench.benchmark import emit_paced  # noqa: E402
from bench.celery_baseline import free_port  # noqa: E402

COUNTERS = """
    SELECT (SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s
            JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()),
           xact_commit, tup_inserted, tup_updated, tup_deleted,
           pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')
    FROM pg_stat_database WHERE datname = current_database()
"""

TOP_STATEMENTS = """
    SELECT calls, round(total_exec_time::numeric, 1), regexp_replace(query, '\\s+', ' ', 'g')
    FROM pg_stat_statements s
    JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()
    ORDER BY calls DESC LIMIT 16
"""

STORED_BYTES = """
    SELECT sum(pg_total_relation_size(p.relid))
    FROM unnest(ARRAY['events', 'deliveries', 'attempts']::regclass[]) AS t,
         pg_partition_tree(t) AS p
"""
"""The three tables with their indexes; partitioned (migration 0013): their partitions'."""


@dataclass
class Counters:
    statements: float
    commits: float
    inserted: float
    updated: float
    deleted: float
    wal_bytes: float
    cpu_s: float

    def minus(self, other: Counters) -> Counters:
        pairs = zip(vars(self).values(), vars(other).values(), strict=True)
        return Counters(*(a - b for a, b in pairs))


def server_cpu(data: Path) -> float:
    """CPU seconds of the cluster's postmaster and its live children (backends that
    exited are not counted: tidings keeps its connections open, psql's are not wanted)."""
    postmaster = psutil.Process(int((data / "postmaster.pid").read_text().split()[0]))
    total = 0.0
    for proc in [postmaster, *postmaster.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def psql(url: str, sql: str) -> str:
    done = subprocess.run(
        ["psql", url, "-qtA", "-F", " ", "-c", sql], check=True, capture_output=True, text=True
    )
    return done.stdout


def read(url: str, data: Path) -> Counters:
    """The counters now (each psql is a fresh session, so no stale stats snapshot)."""
    out = psql(url, COUNTERS).split()
    statements, commits, inserted, updated, deleted, wal = (float(v) for v in out)
    return Counters(statements, commits, inserted, updated, deleted, wal, server_cpu(data))


def report(what: str, per: str, n: int, c: Counters) -> None:
    print(
        f"{what:26s} per {per:8s} statements {c.statements / n:6.1f}  commits "
        f"{c.commits / n:5.2f}  rows ins/upd/del {c.inserted / n:4.1f}/{c.updated / n:4.1f}/"
        f"{c.deleted / n:4.1f}  WAL {c.wal_bytes / n:7.0f} B  server CPU "
        f"{c.cpu_s * 1e6 / n:6.0f} µs"
    )


async def measure(args: argparse.Namespace, work: Path) -> None:
    options = "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all"
    with postgres.own_cluster(options) as server:
        url = postgres.create_database(server.url)
        await asyncio.to_thread(psql, url, "CREATE EXTENSION pg_stat_statements")
        env = harness.tidings_env(url, work / "data")
        key = await asyncio.to_thread(harness.create_key, env)
        rx_port, port = free_port(), free_port()
        rx, base = f"http://127.0.0.1:{rx_port}", f"http://127.0.0.1:{port}"
        receiver = [harness.PYTHON, str(ROOT / "bench" / "receiver.py"), str(rx_port)]
        api_env = {**env, "TIDINGS_DISPATCHER_ENABLED": "false"}
        with (
            harness.process(receiver, dict(os.environ), work / "receiver.log"),
            harness.process(
                [*harness.TIDINGS, "serve", "--port", str(port)], api_env, work / "api.log"
            ),
        ):
            await harness.wait_http(f"{rx}/stats")
            await harness.wait_http(f"{base}/healthz")
            async with (
                harness.api_session(base, key) as api,
                httpx.AsyncClient(timeout=30) as client,
            ):
                for _ in range(args.subs):
                    body = {"url": f"{rx}/hook", "eventTypes": ["client.created"]}
                    async with api.post("/api/v1/webhooks/subscriptions", json=body) as r:
                        assert r.status == 201, await r.text()
                before = await asyncio.to_thread(read, url, server.data)
                await harness.emit_many(api, args.events, "client.created")
                emitted = await asyncio.to_thread(read, url, server.data)
                deliveries = args.events * args.subs
                with harness.process([*harness.TIDINGS, "worker"], env, work / "worker.log"):
                    await harness.wait_received(client, rx, deliveries, 600)
                    drained = await asyncio.to_thread(read, url, server.data)
                    top = await asyncio.to_thread(psql, url, TOP_STATEMENTS)
                    stored = int(await asyncio.to_thread(psql, url, STORED_BYTES))
                paced, paced_top = await _paced(args, url, server.data, env, api, client, rx, work)
    print_top("both phases", top, args.events)
    emit, deliver = emitted.minus(before), drained.minus(emitted)
    print(f"\n{args.events} events x {args.subs} subscriptions on PostgreSQL; server counters\n")
    report("emit (event + its rows)", "event", args.events, emit)
    report("delivery (claim, record)", "delivery", deliveries, deliver)
    per_delivery = (emit.cpu_s + deliver.cpu_s) / deliveries
    print(
        f"\nper delivery, its event's share included: server CPU {per_delivery * 1e6:.0f} µs "
        f"(one primary core keeps the books for about {1 / per_delivery:,.0f} deliveries/s), "
        f"WAL {(emit.wal_bytes + deliver.wal_bytes) / deliveries:,.0f} B, stored "
        f"{stored / deliveries:,.0f} B (events, deliveries, attempts with their indexes)"
    )
    paced_events = int(args.rate * args.seconds)
    print_top(f"paced, {args.rate:.0f} events/s", paced_top, paced_events)
    print()
    report(f"paced at {args.rate:.0f}/s, 1 sub", "event", paced_events, paced)


async def _paced(
    args: argparse.Namespace,
    url: str,
    data: Path,
    env: dict[str, str],
    api: aiohttp.ClientSession,
    client: httpx.AsyncClient,
    rx: str,
    work: Path,
) -> tuple[Counters, str]:
    """Emit at ``--rate`` to one subscription of its own while ``--dispatchers`` worker
    processes run; the server's counters over the paced seconds (after 2 s of warm-up)."""
    body = {"url": f"{rx}/latency", "eventTypes": ["lead.created"]}
    async with api.post("/api/v1/webhooks/subscriptions", json=body) as r:
        assert r.status == 201, await r.text()
    processes = ["--processes", str(args.dispatchers)]
    log = work / "paced-worker.log"
    with harness.process([*harness.TIDINGS, "worker", *processes], env, log):
        await client.post(f"{rx}/reset")
        warm = await emit_paced(api, args.rate, 2)
        await harness.wait_received(client, rx, len(warm), 120)
        await asyncio.to_thread(psql, url, "SELECT pg_stat_statements_reset()")
        before = await asyncio.to_thread(read, url, data)
        sent = await emit_paced(api, args.rate, args.seconds)
        await harness.wait_received(client, rx, len(warm) + len(sent), 120)
        after = await asyncio.to_thread(read, url, data)
        top = await asyncio.to_thread(psql, url, TOP_STATEMENTS)
    return after.minus(before), top


def print_top(phase: str, top: str, events: int) -> None:
    print(f"\nstatements by calls ({phase}; pg_stat_statements, nested ones included):")
    for line in top.splitlines():
        calls, total_ms, query = line.split(" ", 2)
        print(
            f"  {int(calls) / events:6.2f} per event {float(total_ms) * 1000 / events:6.0f} µs"
            f"  {query[:100]}"
        )


def main() -> None:
    args = harness.command_line(
        __doc__, events=2000, subs=2, rate=200.0, seconds=10.0, dispatchers=2
    ).parse_args()
    with tempfile.TemporaryDirectory(prefix="tidings-dbcost-") as tmp:
        asyncio.run(measure(args, Path(tmp)))


if __name__ == "__main__":
    main()
