"""What the delivery queue's claim and record cost the worker, per delivery, with no HTTP.

Run: ``.venv/bin/python bench/queue_cost.py [--db sqlite postgresql] [--events 3000]
[--batches 10 200]``.

For each database, ``--events`` events fan out to 2 subscriptions; then this process
claims and records them (every attempt a success), as a worker does, in claims of each
``--batches`` size in turn (a fresh database for each). It prints the wall time and this
process's CPU (its threads included: the SQLite writer) per delivery. A batch of 10 is a
worker under a trickle of events; 200, one draining a backlog: the difference is what
each claim and record costs whatever it carries (statements, round trips, commits). No
receiver, nothing sent; every loop is bounded by the events stored.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from cryptography.fernet import Fernet  # noqa: E402

from bench import harness  # noqa: E402
from tidings.config import Settings  # noqa: E402
from tidings.domain.clock import now_ms  # noqa: E402
from tidings.domain.deliveries import AttemptResult, DeliveryStatus, Verdict  # noqa: E402
from tidings.domain.scheduling import Lane  # noqa: E402
from tidings.service import Tidings  # noqa: E402
from tidings.storage import AttemptOutcome  # noqa: E402
from tidings.storage.records import ClaimRequest  # noqa: E402

SUBSCRIPTIONS = 2


async def measure(url: str, data_dir: Path, events: int, batch: int) -> tuple[float, float, int]:
    """Wall and CPU microseconds per delivery, and how many, for claims of ``batch``."""
    settings = Settings(
        database_url=url,
        data_dir=data_dir,
        env="development",
        encryption_key=Fernet.generate_key().decode(),
    )
    tidings = Tidings.from_settings(settings)
    await tidings.store.migrate()
    try:
        tenant = (await tidings.store.keys.ensure_tenant("bench")).id
        for n in range(SUBSCRIPTIONS):
            await tidings.create_subscription(tenant, f"http://127.0.0.1:9/{n}", ["client.*"])
        for n in range(events):
            draft = tidings.draft_event(tenant, "client.created", {"n": n, "name": "Ada"})
            await tidings.store.events.insert_event(draft, None)
        per_lane = max(1, batch // SUBSCRIPTIONS)

        def plan(lanes: list[Lane]) -> dict[str, int]:
            return {lane.subscription_id: per_lane for lane in lanes}

        queue, done = tidings.store.queue, 0
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(events * SUBSCRIPTIONS):  # bounded: each round takes at least one
            claimed = await queue.claim(ClaimRequest(now_ms(), 30_000, plan))
            if not claimed:
                break
            finished = now_ms()
            success = Verdict(DeliveryStatus.SUCCEEDED, None)
            await queue.record(
                [AttemptOutcome(c, AttemptResult(200, 1), success, finished) for c in claimed]
            )
            done += len(claimed)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await tidings.close()
    return wall * 1e6 / max(done, 1), cpu * 1e6 / max(done, 1), done


def main() -> None:
    parser = harness.arguments(__doc__, events=3000.0, batches=["10", "200"])
    args = parser.parse_args()
    print(f"{'database':12s} {'batch':>6s} {'deliveries':>11s} {'wall us':>9s} {'CPU us':>8s}")
    with tempfile.TemporaryDirectory(prefix="tidings-queue-cost-") as tmp:
        for batch in map(int, args.batches):
            folder = Path(tmp) / f"batch{batch}"
            folder.mkdir()
            for db, work, url in harness.each_database(args.db, folder):
                wall, cpu, done = asyncio.run(measure(url, work, int(args.events), batch))
                print(f"{db:12s} {batch:6d} {done:11d} {wall:9.0f} {cpu:8.0f}")


if __name__ == "__main__":
    main()
