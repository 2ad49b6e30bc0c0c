"""What subscription filters cost: per evaluation, and per emit with 10,000 of them.

Run: ``.venv/bin/python bench/filters.py [--db sqlite postgresql] [--subs 10000]
[--emits 300]``.

* evaluation: one compiled filter on one envelope (µs), for a few typical filters; and a
  tenant's ``FilterBook`` of ``--subs`` filtered subscriptions on one event type deciding
  one event, divided by ``--subs``: the cost per (event, subscription) the fan-out pays.
* emit latency, per database: ``Tidings.emit`` (the store's hot path: SQLite's writer
  transaction, PostgreSQL's ``tidings_emit_v3``) called ``--emits`` times in a row, with
  0 filtered subscriptions, then with ``--subs`` of them on the event's type (each its own
  threshold, so about 25 pass per event; one in ten also has a ``$regex``). One unfiltered
  subscription takes every event in both runs. Also: the first emit of a process (it reads
  and compiles every filter) and the first emit after one filter changed (it reads them
  again, compiling only the changed one).
* emit throughput with one subscription, filtered (the event passes) or not: two tenants
  on one database, batches alternating between them; events/s and their ratio. The
  dispatcher never looks at filters (a filtered-out event has no delivery row), so
  deliveries/s of what is delivered is the same by construction; the filter's cost is all
  in the emit.

In process, on this machine, sequential: latencies include no HTTP. PostgreSQL runs in a
throwaway cluster (tests/support/postgres.py: fsync off). Every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import statistics
import sys
import tempfile
import time
import timeit
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from sqlalchemy import Connection, insert

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]


from bench import harness  # noqa: E402
from tidings.config import Settings  # noqa: E402
from tidings.domain.clock import now_ms  # noqa: E402
from tidings.domain.events import Envelope  # noqa: E402
from tidings.domain.filters import (  # noqa: E402
    FilterBook,
    FilteredSubscription,
    compile_filter,
    filter_text,
    forget_compiled,
)
from tidings.logs import configure_logging  # noqa: E402
from tidings.service import Tidings  # noqa: E402
from tidings.storage.schema import lanes, subscriptions  # noqa: E402
from tidings.storage.sql.subscriptions import filters_changed  # noqa: E402

TYPE = "payment.succeeded"
URL = "http://127.0.0.1:9/"
TYPICAL = {
    "DESIGN's example ($gte, $in)": {
        "payload.amount.amount": {"$gte": 1000},
        "payload.method": {"$in": ["card"]},
    },
    "one path, bare value": {"type": TYPE},
    "missing path ($exists false)": {"payload.refund": {"$exists": False}},
    "array of objects ($gt any)": {"payload.items.qty": {"$gt": 4}},
    "$regex, case-insensitive": {"payload.method": {"$regex": "^CA", "$options": "i"}},
    "$or of two, $not": {
        "$or": [{"payload.amount.amount": {"$lt": 10}}, {"payload.method": "card"}],
        "$not": {"metadata.test": True},
    },
}


def payload(amount: float) -> dict[str, Any]:
    return {
        "paymentId": "pay_01KH4C2W7N8B3K9YQ6TR5XGM1D",
        "clientId": "cli_01KFZ3M8Q2D7W4XG5RVN6TC9HB",
        "amount": {"amount": amount, "currency": "USD"},
        "method": "card",
        "cardLast4": "4242",
        "items": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 5}],
        "paidUtc": "2026-02-10T16:04:52Z",
    }


def filter_of(n: int) -> dict[str, Any]:
    """Subscription n's filter: amounts from its own threshold on (1000 + 10 n), so of
    events with amounts spread over [0, 2000] about 25 pass each."""
    spec: dict[str, Any] = {
        "payload.amount.amount": {"$gte": 1000 + 10 * n},
        "payload.method": {"$in": ["card", "sepa"]},
    }
    if n % 10 == 0:
        spec["payload.amount.currency"] = {"$regex": "^US"}
    return spec


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return math.nan
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


# --- evaluation ---------------------------------------------------------------------------


def evaluation(subs: int) -> None:
    envelope = Envelope.new(TYPE, "ten_bench", payload(1500), {}).to_dict()
    print("Per evaluation (one compiled filter, one envelope; best of 5):")
    for name, spec in TYPICAL.items():
        predicate = compile_filter(spec)
        runs = timeit.repeat(lambda p=predicate: p(envelope), number=20_000, repeat=5)
        print(f"  {name:34} {min(runs) / 20_000 * 1e6:6.2f} µs  -> {predicate(envelope)}")
    tracemalloc.start()
    book = FilterBook(
        1,
        (
            FilteredSubscription.stored(f"sub_{n}", json.dumps([TYPE]), filter_text(filter_of(n)))
            for n in range(subs)
        ),
    )
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    body = json.dumps(envelope)
    book.matching(TYPE, body)
    runs = timeit.repeat(lambda: book.matching(TYPE, body), number=5, repeat=5)
    per_event = min(runs) / 5
    matched = len(book.matching(TYPE, body))
    print(
        f"  {subs} filtered subscriptions deciding one event: {per_event * 1e3:.1f} ms, "
        f"{per_event / subs * 1e6:.2f} µs per (event, subscription); {matched} pass; "
        f"compiled filters ~{size / 2**20:.0f} MiB"
    )


# --- emits --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def service(url: str, work: Path) -> AsyncIterator[Tidings]:
    settings = Settings(
        database_url=url,
        data_dir=work / "data",
        env="development",
        encryption_key=Fernet.generate_key().decode(),
    )
    tidings = Tidings.from_settings(settings)
    await tidings.store.migrate()
    try:
        yield tidings
    finally:
        await tidings.close()


async def add_filtered(tidings: Tidings, tenant: str, count: int) -> None:
    """``count`` filtered subscriptions on TYPE, in one transaction (as many creates
    would leave them, without 10,000 round trips of setup)."""
    now = now_ms()
    rows = [
        {
            "id": f"sub_bench{n:06d}",
            "tenant_id": tenant,
            "kind": "webhook",
            "url": f"http://127.0.0.1:9/{n}",
            "event_types": json.dumps([TYPE]),
            "enabled": True,
            "secret_enc": "unused",
            "consecutive_failures": 0,
            "signature_scheme": "hmac",
            "propagate_trace": False,
            "filter": filter_text(filter_of(n)),
            "created_ms": now,
            "updated_ms": now,
        }
        for n in range(count)
    ]
    db = tidings.store.db  # type: ignore[attr-defined]

    def tx(conn: Connection) -> None:
        filters_changed(db, conn, tenant)
        conn.execute(insert(subscriptions), rows)
        conn.execute(
            insert(lanes), [{"subscription_id": r["id"], "tenant_id": tenant} for r in rows]
        )

    await db.write(tx)


async def timed_emit(tidings: Tidings, tenant: str, amount: float) -> float:
    started = time.perf_counter()
    await tidings.emit(tenant, TYPE, payload(amount))
    return (time.perf_counter() - started) * 1000


async def latencies(tidings: Tidings, tenant: str, emits: int) -> list[float]:
    rng = random.Random(7)
    return sorted([await timed_emit(tidings, tenant, rng.uniform(0, 2000)) for _ in range(emits)])


async def emit_run(db: str, subs: int, emits: int) -> list[str]:
    lines = []
    with tempfile.TemporaryDirectory() as tmp, harness.database(db, Path(tmp)) as url:
        async with service(url, Path(tmp)) as tidings:
            tenant = (await tidings.store.keys.ensure_tenant("bench")).id
            await tidings.create_subscription(tenant, "http://127.0.0.1:9/all", [TYPE])
            for _ in range(20):
                await timed_emit(tidings, tenant, 1)  # warm pools and caches
            plain = await latencies(tidings, tenant, emits)
            await add_filtered(tidings, tenant, subs)
        forget_compiled()
        async with service(url, Path(tmp)) as tidings:  # a fresh process: nothing compiled
            first = await timed_emit(tidings, tenant, 1500)
            for _ in range(20):
                await timed_emit(tidings, tenant, 1)
            filtered = await latencies(tidings, tenant, emits)
            sub = await tidings.store.subscriptions.get(tenant, "sub_bench000001")
            assert sub is not None
            await tidings.edit_subscription(sub, {"filter": {"payload.amount.amount": {"$gte": 5}}})
            after_change = await timed_emit(tidings, tenant, 1500)
            counts = await tidings.store.queue.delivery_counts()
    for label, found in (("0 filtered", plain), (f"{subs} filtered", filtered)):
        lines.append(
            f"  {db:10} {label:15} p50 {percentile(found, 50):7.2f} ms  "
            f"p99 {percentile(found, 99):7.2f} ms  mean {statistics.fmean(found):7.2f} ms"
        )
    lines.append(
        f"  {db:10} first emit of a process (reads and compiles {subs}): {first:.0f} ms; "
        f"first after one filter changed: {after_change:.0f} ms; "
        f"deliveries queued: {sum(counts.values())}"
    )
    return lines


async def throughput(db: str, emits: int, rounds: int = 6) -> list[str]:
    """Two tenants on one database, one subscription each, one filtered (every event
    passes), one not; batches of emits alternate between them (the machine's other load
    falls on both alike) and each side's best batch counts."""
    with tempfile.TemporaryDirectory() as tmp, harness.database(db, Path(tmp)) as url:
        async with service(url, Path(tmp)) as tidings:
            tenants = {}
            for filtered in (False, True):
                tenant = (await tidings.store.keys.ensure_tenant(f"bench-{filtered}")).id
                spec = TYPICAL["DESIGN's example ($gte, $in)"] if filtered else None
                await tidings.create_subscription(tenant, URL, [TYPE], filter=spec)
                tenants[filtered] = tenant
                for _ in range(20):
                    await timed_emit(tidings, tenant, 1500)
            best = {False: 0.0, True: 0.0}
            batch = max(1, emits // rounds)
            for _ in range(rounds):
                for filtered, tenant in tenants.items():
                    started = time.perf_counter()
                    for _ in range(batch):
                        await tidings.emit(tenant, TYPE, payload(1500))
                    best[filtered] = max(best[filtered], batch / (time.perf_counter() - started))
            counts = await tidings.store.queue.delivery_counts()
            assert sum(counts.values()) == 2 * (20 + rounds * batch), counts  # every one passed
    return [
        f"  {db:10} events/s, one subscription: unfiltered {best[False]:.0f}, "
        f"filtered {best[True]:.0f} (ratio {best[True] / best[False]:.2f})"
    ]


async def main_async(args: argparse.Namespace) -> None:
    configure_logging(json_lines=True, level="warning")
    evaluation(args.subs)
    print(f"\nEmit latency ({args.emits} sequential emits of {TYPE}, in process):")
    for db in args.db:
        for line in await emit_run(db, args.subs, args.emits):
            print(line, flush=True)
    print("\nEmit throughput with a filter vs without (sequential; deliveries/s: see above):")
    for db in args.db:
        for line in await throughput(db, args.emits):
            print(line, flush=True)


def main() -> None:
    args = harness.arguments(__doc__, subs=10_000, emits=300).parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
