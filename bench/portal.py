"""The web portal's pages stay fast (under 200 ms) with 100k events stored.

Run: ``.venv/bin/python bench/portal.py [--events 100000] [--database sqlite|postgresql|both]
[--repeat 20] [--postgres-url postgresql://user@host:port]``.

For each database it seeds one tenant, then times the portal's pages in process.

* seeding: ``--events`` events (real envelopes of the catalog's CRM types) spread over
  the last two hours, fanned out to three subscriptions (``*``, a billing and a
  timeline endpoint: two or three deliveries per event). Each delivery is played
  through the real retry rules (``judge_attempt`` with 6 attempts at most): most
  receivers answer 2xx at once, 1.5% fail first and mostly recover, 0.15% reject the
  event every time and end ``failed``; about 3% of attempts fail. Deliveries whose next
  try is still ahead stay ``pending``. Rows go straight into ``events``, ``deliveries``
  and ``attempts`` with bulk inserts, as the dispatcher would have left them, so the
  per-minute chart has the last hour's attempts to count. PostgreSQL then gets the
  ``VACUUM ANALYZE`` its autovacuum would run after such a load; SQLite gets nothing
  (tidings never runs ``ANALYZE``), as in production.
* timing: an ``httpx.AsyncClient`` over ``ASGITransport`` on ``create_app`` (no
  dispatcher), signed in with an admin key, fetches each page twice to warm up and then
  ``--repeat`` times. ``/healthz`` is the same-run baseline: the page's median over its
  median shows what the page's queries and template cost. A page is OK when its p95 is
  under 200 ms. Besides each page and the event browser's usual filters, two filters
  are its worst cases: a status no delivery has (every event gets probed) and a status
  together with a subscription.

PostgreSQL runs on ``--postgres-url`` (a server: a fresh database is created on it and
dropped afterwards), else on a throwaway cluster as the test suite starts one
(tests/support/postgres.py); it is skipped, with a note, when no server binaries exist.
Bounded: each database has ``--timeout`` seconds, each request 60 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from cryptography.fernet import Fernet
from sqlalchemy import Connection, insert

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from tests.support import postgres  # noqa: E402

from tidings.app import create_app  # noqa: E402
from tidings.config import Settings  # noqa: E402
from tidings.domain.catalog import Catalog  # noqa: E402
from tidings.domain.deliveries import AttemptResult, DeliveryStatus, judge_attempt  # noqa: E402
from tidings.domain.events import Envelope, matches_any  # noqa: E402
from tidings.domain.ids import new_id  # noqa: E402
from tidings.domain.retry import RetryPolicy  # noqa: E402
from tidings.service import Tidings, request_fingerprint  # noqa: E402
from tidings.storage.schema import attempts, deliveries, events  # noqa: E402
from tidings_crm.event_types import EVENT_TYPES  # noqa: E402

CATALOG = Catalog(EVENT_TYPES)

TARGET_MS = 200.0
SPAN_MS = 2 * 3600 * 1000
HOUR_MS = 3600 * 1000
CHUNK = 5_000
ATTEMPT_CHUNK = 20_000
WARM_UP = 2
REQUEST_TIMEOUT = 60.0
RETRY_ATTEMPTS = 6
"""10 + 20 + 40 + 80 + 160 s of backoff: a rejected event gives up within the hour."""
FLAKY = 0.015
POISON = 0.0015
RECOVERY = 0.7

TYPE_WEIGHTS = {
    "client.created": 8,
    "client.updated": 20,
    "client.status_changed": 6,
    "lead.created": 12,
    "lead.converted": 4,
    "note.created": 22,
    "payment.succeeded": 12,
    "payment.failed": 2,
    "invoice.created": 10,
    "agreement.signed": 4,
}
FILTER_TYPE = "payment.failed"
SUBSCRIPTIONS = (
    ("https://crm-sync.example.com/hooks", ("*",)),
    ("https://billing.example.com/hooks", ("client.*", "payment.*", "invoice.*")),
    ("https://timeline.example.com/hooks", ("client.*", "lead.*", "note.*", "agreement.*")),
)
FAILURES = (
    AttemptResult(503, 35, "Service Unavailable"),
    AttemptResult(500, 140, '{"error":"internal"}'),
    AttemptResult(502, 60, "Bad Gateway"),
    AttemptResult(None, 10_000, "", "timed out after 10.0 s"),
)
REJECTED = AttemptResult(422, 25, '{"error":"unknown field \\"clientId\\""}')


# --- seeding ----------------------------------------------------------------------------


@dataclass
class Seeded:
    plaintext: str
    subscription_ids: list[str]
    seconds: float = 0.0
    counts: Counter[str] = field(default_factory=Counter)
    failed_event_id: str = ""
    some_event_id: str = ""


@dataclass
class Plan:
    """One delivery as the dispatcher would have left it, and the attempts it logged."""

    row: dict[str, Any]
    attempts: list[dict[str, Any]]


@dataclass
class Seeder:
    tenant_id: str
    subscriptions: list[tuple[str, tuple[str, ...]]]
    policy: RetryPolicy
    now: int
    rng: random.Random
    seeded: Seeded
    pending_attempts: list[dict[str, Any]] = field(default_factory=list)

    def insert_chunk(self, conn: Connection, times: list[int]) -> None:
        rows = [self.event_row(created) for created in times]
        statement = insert(events).returning(events.c.seq, sort_by_parameter_order=True)
        seqs = conn.execute(statement, rows).scalars().all()
        plans = [
            self.plan(seq, row, sub_id)
            for seq, row in zip(seqs, rows, strict=True)
            for sub_id, patterns in self.subscriptions
            if matches_any(patterns, row["type"])
        ]
        statement = insert(deliveries).returning(deliveries.c.id, sort_by_parameter_order=True)
        ids = conn.execute(statement, [p.row for p in plans]).scalars().all()
        for delivery_id, plan in zip(ids, plans, strict=True):
            self.pending_attempts.extend(dict(a, delivery_id=delivery_id) for a in plan.attempts)

    def event_row(self, created: int) -> dict[str, Any]:
        names = list(TYPE_WEIGHTS)
        name = self.rng.choices(names, weights=list(TYPE_WEIGHTS.values()))[0]
        found = CATALOG.find(name)
        payload = dict(found.sample) if found else {}
        envelope = Envelope(new_id("evt", created), name, created, self.tenant_id, payload)
        self.seeded.counts["events"] += 1
        self.seeded.some_event_id = envelope.id
        return {
            "id": envelope.id,
            "tenant_id": self.tenant_id,
            "type": name,
            "created_ms": created,
            "body": envelope.to_json(),
            "request_hash": request_fingerprint(name, payload, envelope.metadata),
        }

    def plan(self, seq: int, event: dict[str, Any], sub_id: str) -> Plan:
        """Play one delivery through the real retry rules up to ``now``."""
        created = event["created_ms"]
        row: dict[str, Any] = {
            "tenant_id": self.tenant_id,
            "event_seq": seq,
            "subscription_id": sub_id,
            "status": DeliveryStatus.PENDING.value,
            "attempts": 0,
            "due_ms": created,
            "last_status_code": None,
            "created_ms": created,
            "updated_ms": created,
        }
        made: list[dict[str, Any]] = []
        rejects = self.rng.random() < POISON
        flaky = rejects or self.rng.random() < FLAKY
        start = created + self.rng.randint(50, 1_500)
        while start <= self.now:
            result = self.respond(len(made) + 1, flaky, rejects)
            finished = start + result.elapsed_ms
            if finished > self.now:
                break  # still in flight
            made.append(self.attempt_row(event, sub_id, len(made) + 1, result, finished))
            verdict = judge_attempt(result, len(made), created, finished, self.policy)
            row.update(
                status=verdict.status.value,
                attempts=len(made),
                due_ms=verdict.next_attempt_ms or finished,
                last_status_code=result.status_code,
                updated_ms=finished,
            )
            if verdict.status is not DeliveryStatus.PENDING:
                break
            start = row["due_ms"] + self.rng.randint(50, 1_500)
        self.count(event, row, made)
        return Plan(row, made)

    def respond(self, attempt: int, flaky: bool, rejects: bool) -> AttemptResult:
        if rejects:
            return REJECTED
        if not flaky or (attempt > 1 and self.rng.random() < RECOVERY):
            return AttemptResult(200, self.rng.randint(15, 250), '{"received":true}')
        return self.rng.choice(FAILURES)

    def attempt_row(
        self, event: dict[str, Any], sub_id: str, attempt: int, result: AttemptResult, at: int
    ) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "event_id": event["id"],
            "subscription_id": sub_id,
            "attempt": attempt,
            "outcome": "succeeded" if result.succeeded else "failed",
            "status_code": result.status_code,
            "elapsed_ms": result.elapsed_ms,
            "response_body": result.response_body,
            "error": result.error,
            "created_ms": at,
        }

    def count(self, event: dict[str, Any], row: dict[str, Any], made: list[dict[str, Any]]) -> None:
        counts = self.seeded.counts
        counts[f"deliveries {row['status']}"] += 1
        counts["attempts"] += len(made)
        counts["attempts failed"] += sum(a["outcome"] == "failed" for a in made)
        counts["attempts last hour"] += sum(a["created_ms"] >= self.now - HOUR_MS for a in made)
        if row["status"] == DeliveryStatus.FAILED.value:
            self.seeded.failed_event_id = event["id"]


def insert_attempts(conn: Connection, rows: list[dict[str, Any]]) -> None:
    conn.execute(insert(attempts), rows)


async def seed(settings: Settings, count: int, rng: random.Random) -> Seeded:
    tidings = Tidings.from_settings(settings)
    try:
        await tidings.store.migrate()
        key, plaintext = await tidings.create_api_key("bench", ["admin"])
        subs = [
            (await tidings.create_subscription(key.tenant_id, url, list(patterns)))[0]
            for url, patterns in SUBSCRIPTIONS
        ]
        seeded = Seeded(plaintext, [s.id for s in subs])
        started = time.monotonic()
        await fill(tidings, settings, seeded, key.tenant_id, count, rng)
        seeded.seconds = time.monotonic() - started
        return seeded
    finally:
        await tidings.close()


async def fill(
    tidings: Tidings,
    settings: Settings,
    seeded: Seeded,
    tenant_id: str,
    count: int,
    rng: random.Random,
) -> None:
    now = int(time.time() * 1000)
    subscriptions = [
        (sub_id, pattern)
        for sub_id, (_, pattern) in zip(seeded.subscription_ids, SUBSCRIPTIONS, strict=True)
    ]
    seeder = Seeder(tenant_id, subscriptions, settings.retry_policy, now, rng, seeded)
    times = sorted(now - rng.randrange(1, SPAN_MS) for _ in range(count))
    write = tidings.store.db.write  # type: ignore[attr-defined]
    for first in range(0, count, CHUNK):
        await write(lambda conn, f=first: seeder.insert_chunk(conn, times[f : f + CHUNK]))
    made = sorted(seeder.pending_attempts, key=lambda a: a["created_ms"])
    for first in range(0, len(made), ATTEMPT_CHUNK):
        await write(lambda conn, f=first: insert_attempts(conn, made[f : f + ATTEMPT_CHUNK]))


def describe(database: str, seeded: Seeded) -> str:
    counts = seeded.counts
    statuses = ", ".join(
        f"{counts[f'deliveries {s.value}']} {s.value}"
        for s in DeliveryStatus
        if counts[f"deliveries {s.value}"]
    )
    failed = 100 * counts["attempts failed"] / max(1, counts["attempts"])
    return (
        f"{database}: seeded {counts['events']} events, deliveries {statuses}; "
        f"{counts['attempts']} attempts ({failed:.1f}% failed, "
        f"{counts['attempts last hour']} in the chart's last hour) in {seeded.seconds:.1f} s"
    )


# --- timing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    name: str
    path: str
    expect: int = 200


@dataclass(frozen=True)
class Row:
    page: str
    database: str
    samples: list[float]
    error: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p95(self) -> float:
        ordered = sorted(self.samples)
        return ordered[max(1, math.ceil(0.95 * len(ordered))) - 1]


def pages(seeded: Seeded) -> list[Page]:
    crm_sync, billing, _ = seeded.subscription_ids
    hour_ago = datetime.fromtimestamp(time.time() - 3600, UTC).strftime("%Y-%m-%dT%H:%M")

    def browse(**query: str) -> str:
        return "/portal/events?" + urlencode(query)

    return [
        Page("healthz (baseline)", "/healthz"),
        Page("home (chart + subscriptions)", "/portal/"),
        Page("chart (htmx refresh)", "/portal/chart"),
        Page("subscription crm-sync", f"/portal/subscriptions/{crm_sync}"),
        Page(
            "subscription crm-sync ?outcome=failed",
            f"/portal/subscriptions/{crm_sync}?outcome=failed",
        ),
        Page("events", "/portal/events"),
        Page(f"events ?type={FILTER_TYPE}", browse(type=FILTER_TYPE)),
        Page("events ?status=failed", browse(status="failed")),
        Page("events ?status=pending", browse(status="pending")),
        Page("events ?status=cancelled (none)", browse(status="cancelled")),
        Page("events ?subscription=billing", browse(subscription=billing)),
        Page(
            "events ?status=failed&subscription=crm-sync",
            browse(status="failed", subscription=crm_sync),
        ),
        Page("events ?before_time=1 h ago", browse(before_time=hour_ago)),
        Page("events ?type=<event id> (303)", browse(type=seeded.some_event_id), 303),
        Page(
            "event (with failed delivery)",
            f"/portal/events/{seeded.failed_event_id or seeded.some_event_id}",
        ),
    ]


async def fetch(client: httpx.AsyncClient, page: Page) -> float:
    started = time.perf_counter()
    response = await asyncio.wait_for(client.get(page.path), REQUEST_TIMEOUT)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != page.expect:
        raise RuntimeError(f"{page.path}: HTTP {response.status_code}, wanted {page.expect}")
    return elapsed


async def time_page(client: httpx.AsyncClient, page: Page, database: str, repeat: int) -> Row:
    """The page's timings, or why it failed (a broken page must not cost the other rows)."""
    try:
        for _ in range(WARM_UP):
            await fetch(client, page)
        samples = [await fetch(client, page) for _ in range(repeat)]
    except (RuntimeError, TimeoutError) as exc:
        return Row(page.name, database, [], str(exc))
    return Row(page.name, database, samples)


async def sign_in(client: httpx.AsyncClient, plaintext: str) -> None:
    response = await client.post("/portal/login", data={"api_key": plaintext, "next": "/portal/"})
    if response.status_code != 303 or "tidings_portal" not in client.cookies:
        raise RuntimeError(f"sign-in failed: HTTP {response.status_code}")


async def time_portal(settings: Settings, seeded: Seeded, database: str, repeat: int) -> list[Row]:
    app = create_app(Tidings.from_settings(settings), run_dispatcher=False)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://portal.test") as client,
    ):
        await sign_in(client, seeded.plaintext)
        return [await time_page(client, page, database, repeat) for page in pages(seeded)]


# --- databases --------------------------------------------------------------------------


def settings_for(database_url: str, work: Path) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=work / "data",
        env="development",
        encryption_key=Fernet.generate_key().decode(),
        retry_max_attempts=RETRY_ATTEMPTS,
    )


async def run_database(
    database: str, database_url: str, work: Path, args: argparse.Namespace
) -> list[Row]:
    settings = settings_for(database_url, work)
    async with asyncio.timeout(args.timeout):
        seeded = await seed(settings, args.events, random.Random(args.seed))
        print(describe(database, seeded), flush=True)
        if database == "postgresql":
            psql(database_url, "VACUUM ANALYZE")
        return await time_portal(settings, seeded, database, args.repeat)


def psql(url: str, sql: str) -> None:
    subprocess.run(["psql", url, "-q", "-c", sql], check=True, capture_output=True, timeout=600)


@contextlib.contextmanager
def postgres_server(url: str | None) -> Iterator[str | None]:
    """A server URL: ``--postgres-url``, else a throwaway cluster, else None."""
    if url:
        yield url.rstrip("/")
    elif postgres.available():
        with postgres.cluster() as server:
            yield server
    else:
        yield None


async def run_postgresql(work: Path, args: argparse.Namespace) -> list[Row]:
    with postgres_server(args.postgres_url) as server:
        if server is None:
            print("postgresql: skipped, no PostgreSQL server binaries (apt-get install postgresql)")
            return []
        database_url = postgres.create_database(server)
        try:
            return await run_database("postgresql", database_url, work, args)
        finally:
            name = database_url.rsplit("/", 1)[1]
            psql(f"{server}/postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def run(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="tidings-portal-") as tmp:
        if args.database in ("sqlite", "both"):
            work = Path(tmp) / "sqlite"
            url = f"sqlite:///{work / 'tidings.db'}"
            rows += await run_database("sqlite", url, work, args)
        if args.database in ("postgresql", "both"):
            rows += await run_postgresql(Path(tmp) / "postgresql", args)
    return rows


def print_table(rows: list[Row]) -> None:
    baseline = {r.database: r.median for r in rows if r.page.startswith("healthz") and not r.error}
    print(
        f"\n{'page':<44} {'database':<10} {'median ms':>9} {'p95 ms':>8} {'max ms':>8} "
        f"{'/healthz':>9}  target {TARGET_MS:.0f} ms (p95)"
    )
    for r in rows:
        if r.error:
            print(f"{r.page:<44} {r.database:<10} ERROR {r.error}")
            continue
        ratio = r.median / baseline[r.database] if baseline.get(r.database) else math.nan
        verdict = "OK" if r.p95 < TARGET_MS else "SLOW"
        print(
            f"{r.page:<44} {r.database:<10} {r.median:9.1f} {r.p95:8.1f} "
            f"{max(r.samples):8.1f} {ratio:8.1f}x  {verdict}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--postgres-url", help="a PostgreSQL server, e.g. postgresql://u@h:5432")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per database")
    parser.add_argument("--seed", type=int, default=1, help="random seed for the data")
    rows = asyncio.run(run(parser.parse_args()))
    if rows:
        print_table(rows)


if __name__ == "__main__":
    main()
