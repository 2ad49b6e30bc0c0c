"""Retention on 10,000,000 attempts: today's batched DELETE against partition drops.

Run: ``.venv/bin/python bench/retention.py [--events 2500000] [--delete-seconds 120]
[--partition-rows 250000] [--partitioned-only]``; ``--claims-by-partitions`` instead
times claims on small databases with more and more partitions.

A throwaway cluster holds two databases with the same rows, generated in SQL
(``generate_series``): ``--events`` events over 10 days, each delivered to 2 subscriptions
in 2 attempts (a 503, then a 200): 2.5 M events, 5 M deliveries, 10 M attempts by default.
The newest 200,000 deliveries (at most 4 %) are left pending, for a claim probe.
Retention keeps 2 days, so 80 % of the rows are past it.

* ``plain``: the schema before migration 0013 (plain tables). Retention is the real code
  path of today, ``SQLRetention.prune_events`` in batches of ``TIDINGS_PRUNE_BATCH_SIZE``
  (1000), run for at most ``--delete-seconds``; the time for all of it is extrapolated
  from the rate (said so in the output).
* ``partitioned``: the schema at the head (0013), ``--partition-rows`` keys per partition
  made ahead as tidings makes them; retention is ``PartitionedRetention`` (drops, then the
  row deletes it still does), run to the end.

While each runs, a probe claims from the pending deliveries through the real
``PostgresQueue.claim`` every 50 ms and times it: a claim that waits behind retention is
a stalled dispatcher. Loopback only; every loop bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from cryptography.fernet import Fernet  # noqa: E402
from tests.support import postgres  # noqa: E402

from bench import harness  # noqa: E402
from tidings.config import Settings  # noqa: E402
from tidings.domain.clock import now_ms  # noqa: E402
from tidings.service import Tidings  # noqa: E402
from tidings.storage.migrate import upgrade_connection  # noqa: E402
from tidings.storage.records import ClaimRequest  # noqa: E402

DAY_MS = 86_400_000
SPAN_DAYS = 10
RETENTION_DAYS = 2
PENDING = 200_000
PROBE_EVERY = 0.05
STALL_S = 0.5
SERVER = (
    "-c shared_buffers=2GB -c max_wal_size=16GB -c checkpoint_timeout=30min "
    "-c maintenance_work_mem=1GB -c work_mem=64MB"
)
BODY = (
    '{"id":"evt_x","type":"client.created","createdUtc":"2026-01-28T10:30:00Z",'
    '"companyId":"ten_bench","payload":{"name":"Ada Lovelace","email":"ada@example.com",'
    '"plan":"pro","seats":12,"tags":["vip","emea"]},"metadata":{"source":"bench"}}'
)
SIZES = """
    SELECT sum(pg_total_relation_size(oid)) FROM pg_class
    WHERE relkind = 'r' AND coalesce(pg_partition_root(oid), oid)::regclass::text
                            IN ('events', 'deliveries', 'attempts')
"""
COUNTS = "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM deliveries), " + (
    "(SELECT count(*) FROM attempts)"
)


@dataclass
class Run:
    name: str
    seconds: float
    rows: int
    """Rows removed (events, deliveries and attempts)."""
    rows_old: int
    """Rows past the cutoff before retention ran."""
    finished: bool
    size_before: int
    size_after: int
    claims: list[float]
    baseline: list[float]

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else float("inf")

    @property
    def projected(self) -> float:
        """Seconds for every old row, at the measured rate if it did not finish."""
        return self.seconds if self.finished else self.rows_old / self.rate


def psql(url: str, sql: str) -> str:
    done = subprocess.run(
        ["psql", url, "-qAt", "-v", "ON_ERROR_STOP=1", "-c", sql],
        check=True,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    return done.stdout.strip()


def load_sql(n: int, tenant: str, subs: tuple[str, str], t0: int) -> list[tuple[str, str]]:
    span = SPAN_DAYS * DAY_MS
    at = f"({t0}::bigint + (i::bigint * {span} / {n}))"
    pair = f"ARRAY['{subs[0]}', '{subs[1]}']"
    return [
        (
            "events",
            f"""INSERT INTO events (seq, id, tenant_id, type, created_ms, body)
            SELECT i, 'evt_' || lpad(to_hex(i), 26, '0'), '{tenant}', 'client.created',
                   {at}, '{BODY}'
            FROM generate_series(1, {n}) AS i""",
        ),
        (
            "deliveries",
            f"""INSERT INTO deliveries (id, tenant_id, event_seq, subscription_id, status,
                                    attempts, due_ms, created_ms, updated_ms)
            SELECT 2 * (i - 1) + k, '{tenant}', i, ({pair})[k], 'succeeded', 2,
                   {at} + 2000, {at} + 10, {at} + 2000
            FROM generate_series(1, {n}) AS i CROSS JOIN generate_series(1, 2) AS k""",
        ),
        (
            "attempts",
            f"""INSERT INTO attempts (id, delivery_id, tenant_id, event_id, subscription_id,
                                  attempt, outcome, status_code, elapsed_ms, response_body,
                                  created_ms)
            SELECT 2 * (d - 1) + a, d, '{tenant}', 'evt_' || lpad(to_hex(i), 26, '0'),
                   ({pair})[2 - d % 2], a,
                   CASE a WHEN 1 THEN 'failed' ELSE 'succeeded' END,
                   CASE a WHEN 1 THEN 503 ELSE 200 END, 40,
                   CASE a WHEN 1 THEN 'busy' ELSE 'ok' END, {at} + a * 1000
            FROM generate_series(1, {2 * n}) AS d
            CROSS JOIN LATERAL (SELECT (d + 1) / 2 AS i) AS e
            CROSS JOIN generate_series(1, 2) AS a""",
        ),
    ]


async def prepare(url: str, partitioned: bool, args: argparse.Namespace, work: Path) -> Tidings:
    settings = Settings(
        database_url=url,
        data_dir=work,
        env="development",
        encryption_key=Fernet.generate_key().decode(),
        partition_rows=args.partition_rows,
    )
    tidings = Tidings.from_settings(settings)
    db = tidings.store.db  # type: ignore[attr-defined]
    if partitioned:
        await tidings.prepare_database()
    else:
        await db.write(lambda conn: upgrade_connection(conn, "0012"))
    tenant = await tidings.store.keys.ensure_tenant("bench")
    subs = []
    for path in ("a", "b"):
        sub, _ = await tidings.create_subscription(tenant.id, f"http://127.0.0.1:9/{path}", ["*"])
        subs.append(sub.id)
    n = args.events
    for seq, top in (("events_seq_seq", n), ("deliveries_id_seq", 2 * n)):
        psql(url, f"SELECT setval('{seq}', {top})")
    psql(url, f"SELECT setval('attempts_id_seq', {4 * n})")
    if partitioned:  # as tidings makes them ahead (here all at once, before the rows)
        while await tidings.store.retention.prepare_partitions(args.partition_rows):
            pass
    t0 = now_ms() - SPAN_DAYS * DAY_MS - 3_600_000
    for table, sql in load_sql(n, tenant.id, (subs[0], subs[1]), t0):
        started = time.perf_counter()
        await asyncio.to_thread(psql, url, sql)
        print(f"  {table}: loaded in {time.perf_counter() - started:.0f} s", flush=True)
    await asyncio.to_thread(
        psql,
        url,
        f"UPDATE deliveries SET status = 'pending', attempts = 0, due_ms = {now_ms() - 1000} "
        f"WHERE id > {2 * n - min(PENDING, 2 * n // 25)}",
    )
    psql(url, f"UPDATE lanes SET next_due_ms = {now_ms()}")
    started = time.perf_counter()
    await asyncio.to_thread(psql, url, "VACUUM ANALYZE")
    print(f"  vacuum analyze: {time.perf_counter() - started:.0f} s", flush=True)
    return tidings


async def probe(tidings: Tidings, seconds: float | None, stop: asyncio.Event) -> list[float]:
    """Claim latencies (s), every ``PROBE_EVERY`` s, until ``stop`` (or ``seconds``)."""
    latencies: list[float] = []
    ends = None if seconds is None else time.monotonic() + seconds
    while not stop.is_set() and (ends is None or time.monotonic() < ends):
        request = ClaimRequest(
            now_ms(), 600_000, lambda lanes: {x.subscription_id: 5 for x in lanes}
        )
        started = time.perf_counter()
        await tidings.store.queue.claim(request)
        latencies.append(time.perf_counter() - started)
        await asyncio.sleep(PROBE_EVERY)
    return latencies


async def measured(
    name: str, tidings: Tidings, url: str, work: Callable[[], Awaitable[bool]]
) -> Run:
    baseline = await probe(tidings, 5.0, asyncio.Event())
    cutoff = now_ms() - RETENTION_DAYS * DAY_MS
    before = [int(x) for x in psql(url, COUNTS).split("|")]
    old = sum(
        int(psql(url, f"SELECT count(*) FROM {t} WHERE created_ms < {cutoff}"))
        for t in ("events", "deliveries", "attempts")
    )
    size_before = int(psql(url, SIZES))
    stop = asyncio.Event()
    claims = asyncio.create_task(probe(tidings, None, stop))
    started = time.perf_counter()
    finished = await work()
    seconds = time.perf_counter() - started
    stop.set()
    latencies = await claims
    after = [int(x) for x in psql(url, COUNTS).split("|")]
    size_after = int(psql(url, SIZES))
    rows = sum(before) - sum(after)
    return Run(name, seconds, rows, old, finished, size_before, size_after, latencies, baseline)


async def batched_delete(tidings: Tidings, budget: float) -> bool:
    """Today's path, as ``prune_once`` drives it: batches until none is full, or the budget."""
    batch = tidings.settings.prune_batch_size
    cutoff = now_ms() - RETENTION_DAYS * DAY_MS
    ends = time.monotonic() + budget
    while time.monotonic() < ends:
        if await tidings.store.retention.prune_events(cutoff, batch) < batch:
            return True
        await asyncio.sleep(0)
    return False


async def partition_drops(tidings: Tidings) -> bool:
    cutoff = now_ms() - RETENTION_DAYS * DAY_MS
    retention = tidings.store.retention
    started = time.perf_counter()
    dropped = await retention.drop_partitions(cutoff)
    took = time.perf_counter() - started
    print(f"  drop_partitions: {took:.1f} s for {dropped} partitions", flush=True)
    deleted = 0
    while (done := await retention.prune_events(cutoff, tidings.settings.prune_batch_size)) > 0:
        deleted += done
    print(f"  partitions dropped: {dropped}; events deleted as rows after: {deleted}")
    return True


async def claims_by_partitions(work: Path) -> None:
    """Claim latency against how many partitions ``deliveries`` has, on 20,000 events."""
    with postgres.own_cluster(SERVER) as server:
        for rows in (None, 40_000, 4_000, 1_000):
            shape = argparse.Namespace(events=20_000, partition_rows=rows or 1_000)
            url = postgres.create_database(server.url)
            tidings = await prepare(url, rows is not None, shape, work)
            try:
                found = psql(url, PARTS) if rows else "plain"
                ms = sorted(x * 1000 for x in await probe(tidings, 8.0, asyncio.Event()))
            finally:
                await tidings.close()
            print(
                f"deliveries partitions: {found}: claim p50 {statistics.median(ms):.1f} ms, "
                f"p90 {ms[int(len(ms) * 0.9)]:.1f} ms ({len(ms)} claims)",
                flush=True,
            )


PARTS = """
    SELECT count(*) FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
    WHERE c.relkind = 'r' AND i.inhparent = CAST('deliveries' AS regclass)
"""


def report(run: Run) -> None:
    ms = sorted(x * 1000 for x in run.claims)
    base = sorted(x * 1000 for x in run.baseline)
    stalls = sum(1 for x in run.claims if x > STALL_S)
    print(f"\n{run.name}")
    print(
        f"  removed {run.rows:,} rows of {run.rows_old:,} past the cutoff in {run.seconds:.1f} s "
        f"({run.rate:,.0f} rows/s){'' if run.finished else ' (stopped at the time budget)'}"
    )
    if not run.finished:
        print(f"  all of them at that rate: {run.projected:,.0f} s (extrapolated)")
    print(
        f"  size of events+deliveries+attempts: {run.size_before / 2**30:.2f} GiB before, "
        f"{run.size_after / 2**30:.2f} GiB after"
    )
    print(
        f"  claim probe: {len(ms)} claims, p50 {statistics.median(ms):.1f} ms, "
        f"p99 {ms[int(len(ms) * 0.99) - 1]:.1f} ms, max {ms[-1]:.1f} ms, "
        f"{stalls} over {STALL_S * 1000:.0f} ms (before: p50 {statistics.median(base):.1f} ms, "
        f"max {base[-1]:.1f} ms)"
    )


async def run(args: argparse.Namespace) -> None:
    if args.claims_by_partitions:
        with tempfile.TemporaryDirectory() as tmp:
            await claims_by_partitions(Path(tmp))
        return
    with postgres.own_cluster(SERVER) as server, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results = []
        kinds = [("plain", False), ("partitioned", True)]
        for name, partitioned in kinds[1:] if args.partitioned_only else kinds:
            url = postgres.create_database(server.url)
            print(
                f"{name}: loading {args.events:,} events, {2 * args.events:,} deliveries, "
                f"{4 * args.events:,} attempts",
                flush=True,
            )
            tidings = await prepare(url, partitioned, args, work)
            try:
                if partitioned:
                    result = await measured(
                        "partition drops (PartitionedRetention)",
                        tidings,
                        url,
                        lambda t=tidings: partition_drops(t),
                    )
                else:
                    result = await measured(
                        f"batched DELETE (SQLRetention.prune_events, batch "
                        f"{tidings.settings.prune_batch_size})",
                        tidings,
                        url,
                        lambda t=tidings: batched_delete(t, args.delete_seconds),
                    )
            finally:
                await tidings.close()
            report(result)
            results.append(result)
            with contextlib.suppress(Exception):
                psql(f"{server.url}/postgres", f"DROP DATABASE {url.rsplit('/', 1)[1]}")
        if len(results) < 2:
            return
        plain, parts = results
        print(
            f"\npartition drops vs batched DELETE: {parts.rate / plain.rate:,.1f}x the rows/s; "
            f"all past the cutoff: {plain.projected:,.0f} s by DELETE"
            f"{'' if plain.finished else ' (extrapolated)'} vs {parts.seconds:.1f} s by drops"
        )


def main() -> None:
    parser = harness.command_line(
        __doc__, events=2_500_000, delete_seconds=120.0, partition_rows=250_000
    )
    parser.add_argument(
        "--claims-by-partitions",
        action="store_true",
        help="only: claim latency against the number of partitions, on 20,000 events",
    )
    parser.add_argument(
        "--partitioned-only", action="store_true", help="skip the plain database (and DELETE)"
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
