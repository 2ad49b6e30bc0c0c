"""Memory with a deep backlog: RSS of a delivering process must not grow with the queue.

Run: ``.venv/bin/python bench/backlog.py --db sqlite postgresql --backlog 1000000``.

Bulk-inserts ``--backlog`` due deliveries (one event and one delivery each, to one
subscription on a fast local receiver), then starts the delivering process (``tidings
serve`` on SQLite, ``tidings worker`` on PostgreSQL) for ``--seconds`` and samples its
RSS every second. Claims are bounded batches, so RSS should be flat however deep the
queue is. Bounded: the run stops after ``--seconds``; the backlog is not drained.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import httpx
import psutil
from sqlalchemy import Connection, insert, update

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from bench import harness  # noqa: E402
from bench.celery_baseline import free_port  # noqa: E402
from tidings.config import Settings  # noqa: E402
from tidings.domain.events import Envelope  # noqa: E402
from tidings.service import Tidings  # noqa: E402
from tidings.storage.schema import deliveries, events, lanes  # noqa: E402

CHUNK = 20_000


async def fill(env: dict[str, str], url: str, count: int) -> float:
    """Insert ``count`` events with one due delivery each; returns seconds taken."""
    settings = Settings(
        database_url=env["TIDINGS_DATABASE_URL"],
        data_dir=Path(env["TIDINGS_DATA_DIR"]),
        env="development",
        encryption_key=env["TIDINGS_ENCRYPTION_KEY"],
    )
    tidings = Tidings.from_settings(settings)
    await tidings.prepare_database()  # as any tidings process does before it writes
    key, _ = await tidings.create_api_key("backlog", ["admin"])
    sub, _ = await tidings.create_subscription(key.tenant_id, url, ["client.created"])
    started = time.monotonic()
    now = int(time.time() * 1000)
    for first in range(0, count, CHUNK):
        size = min(CHUNK, count - first)
        await tidings.store.db.write(  # type: ignore[attr-defined]
            lambda conn, f=first, n=size: _insert_chunk(conn, key.tenant_id, sub.id, f, n, now)
        )
    await tidings.close()
    return time.monotonic() - started


def _insert_chunk(
    conn: Connection, tenant_id: str, sub_id: str, first: int, size: int, now: int
) -> None:
    rows = []
    for i in range(first, first + size):
        event_id = f"evt_backlog{i:012d}"
        body = Envelope(event_id, "client.created", now, tenant_id, {"i": i}).to_json()
        rows.append(
            {
                "id": event_id,
                "tenant_id": tenant_id,
                "type": "client.created",
                "created_ms": now,
                "body": body,
            }
        )
    seqs = conn.execute(insert(events).returning(events.c.seq), rows).scalars().all()
    conn.execute(
        insert(deliveries),
        [
            {
                "tenant_id": tenant_id,
                "event_seq": seq,
                "subscription_id": sub_id,
                "status": "pending",
                "attempts": 0,
                "due_ms": now,
                "created_ms": now,
                "updated_ms": now,
            }
            for seq in seqs
        ],
    )
    conn.execute(update(lanes).where(lanes.c.subscription_id == sub_id).values(next_due_ms=now))


class Sample(NamedTuple):
    """What a delivering process had done ``elapsed`` seconds after it started."""

    elapsed: float
    rss_mb: float
    delivered: int
    """Deliveries the receiver has counted."""
    cpu_s: float
    """CPU seconds the process has used, all its threads."""


async def sample_delivering(
    db: str, env: dict[str, str], work: Path, rx: str, seconds: float
) -> list[Sample]:
    """Run the delivering process a user would run for ``db`` (``serve`` on SQLite, a
    ``worker`` on PostgreSQL) for ``seconds``, sampling it every second."""
    command = (
        [*harness.TIDINGS, "serve", "--port", str(free_port())]
        if db == "sqlite"
        else [*harness.TIDINGS, "worker"]
    )
    samples: list[Sample] = []
    async with httpx.AsyncClient() as client:
        await client.post(f"{rx}/reset")
        with harness.process(command, env, work / f"{db}.log") as proc:
            ps = psutil.Process(proc.pid)
            started = time.monotonic()
            while (elapsed := time.monotonic() - started) < seconds:
                await asyncio.sleep(1)
                count = (await client.get(f"{rx}/stats")).json()["count"]
                cpu = ps.cpu_times()
                rss = ps.memory_info().rss / 2**20
                samples.append(Sample(elapsed, rss, int(count), cpu.user + cpu.system))
    return samples


async def observe(
    args: argparse.Namespace, db: str, database_url: str, work: Path, rx: str
) -> None:
    env = harness.tidings_env(database_url, work / "data", new_key=True)
    fill_s = await fill(env, f"{rx}/hook", args.backlog)
    samples = await sample_delivering(db, env, work, rx, args.seconds)
    print(f"\n{db}: backlog {args.backlog} inserted in {fill_s:.0f} s")
    print(f"{'t (s)':>6s} {'RSS MB':>8s} {'delivered':>10s}")
    for sample in samples[:: max(1, len(samples) // 12)] + samples[-1:]:
        print(f"{sample.elapsed:6.0f} {sample.rss_mb:8.1f} {sample.delivered:10d}")
    early = [s.rss_mb for s in samples if s.elapsed >= 5][:3]
    if early:
        print(
            f"RSS after 5 s {early[0]:.1f} MB, at the end {samples[-1].rss_mb:.1f} MB, "
            f"peak {max(s.rss_mb for s in samples):.1f} MB"
        )


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="tidings-backlog-") as tmp:
        async with harness.fast_receiver({}, Path(tmp) / "receiver.log") as rx:
            for db, work, url in harness.each_database(args.db, Path(tmp)):
                await observe(args, db, url, work, rx)


def main() -> None:
    args = harness.arguments(__doc__, backlog=1_000_000, seconds=60.0).parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
