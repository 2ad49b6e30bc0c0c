"""Retention: prune old events, logged response bodies and expired portal sessions, a
small batch at a time.

Each batch is its own short transaction, and the loop yields between batches, so the
dispatcher's claims and records interleave with pruning instead of waiting behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from tidings.domain.clock import now_ms
from tidings.storage import DeliveryQueue, Retention
from tidings.storage.errors import Outage, StorageUnavailable

log = structlog.get_logger("tidings.retention")

DAY_MS = 86_400_000


@dataclass(frozen=True)
class Pruned:
    events: int
    bodies: int
    sessions: int = 0
    partitions: int = 0


async def prune_once(
    store: Retention, retention_days: float, body_retention_days: float, batch: int, now_ms: int
) -> Pruned:
    """Prune everything past its retention now; returns how much went. Where tables are
    partitioned (PostgreSQL), whole partitions go first and row deletes take the rest.
    Portal sessions go once expired: a session row lasts no longer than its cookie (at
    most 30 days)."""
    bodies = await _drain(
        lambda: store.prune_response_bodies(now_ms - int(body_retention_days * DAY_MS), batch),
        batch,
    )
    cutoff = now_ms - int(retention_days * DAY_MS)
    partitions = await store.drop_partitions(cutoff)
    events = await _drain(lambda: store.prune_events(cutoff, batch), batch)
    sessions = await _drain(lambda: store.prune_sessions(now_ms, batch), batch)
    return Pruned(events=events, bodies=bodies, sessions=sessions, partitions=partitions)


async def _drain(step: Callable[[], Awaitable[int]], batch: int) -> int:
    total = 0
    while True:
        done = await step()
        total += done
        if done < batch:
            return total
        await asyncio.sleep(0)


async def make_partitions(store: Retention, rows: int) -> None:
    """Make the partitions ahead (PostgreSQL). A failure other than an outage is logged,
    not raised: until they are made rows land in DEFAULT, and nothing else waits for
    them, so neither a process's start nor the rest of a retention round should."""
    try:
        await store.prepare_partitions(rows)
    except StorageUnavailable:
        raise
    except Exception:
        log.exception("partitions_not_made", consequence="rows land in DEFAULT until made")


async def run_pruner(
    store: Retention,
    queue: DeliveryQueue,
    stop: asyncio.Event,
    *,
    retention_days: float,
    body_retention_days: float,
    batch: int,
    interval: float,
    partition_rows: int,
) -> None:
    """Every ``interval`` seconds make the partitions ahead (``partition_rows`` keys each,
    where tables are partitioned), prune, then let go FIFO deliveries whose predecessor
    was pruned; through a database outage, retry soon rather than an interval later.

    A round that fails otherwise is logged and tried again an interval later: this is
    upkeep, and crashing would take the process, and the deliveries it sends, down with
    it (see ``supervision``)."""
    outage = Outage("retention")
    while not stop.is_set():
        now = now_ms()
        try:
            await make_partitions(store, partition_rows)
            pruned = await prune_once(store, retention_days, body_retention_days, batch, now)
            freed = await queue.repair(now)
        except StorageUnavailable as exc:
            await outage.failed(exc, stop)
            continue
        except Exception:
            log.exception("retention_failed", retry_in_s=interval)
        else:
            outage.succeeded()
            _log_pruned(pruned, freed)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


def _log_pruned(pruned: Pruned, freed: int) -> None:
    if pruned.events or pruned.bodies or pruned.sessions or pruned.partitions or freed:
        log.info(
            "pruned",
            partitions=pruned.partitions,
            events=pruned.events,
            response_bodies=pruned.bodies,
            portal_sessions=pruned.sessions,
            repaired=freed,
        )
