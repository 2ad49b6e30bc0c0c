"""How many PostgreSQL primaries a load needs, from the per-delivery costs measured by
``bench/db_cost.py`` (docs/scaling.md). Pure arithmetic and a seeded simulation of tenant
sizes; it contacts nothing.

Run: ``.venv/bin/python bench/shards.py [--deliveries-per-day 1e9] [--peak 5] ...``

Tenants' sizes follow a Zipf law (a few large tenants, a long tail). Tenants are placed on
primaries whole (a tenant's stream lock and FIFO keys live on one primary) either by hash
or largest-first onto the least loaded primary (a routing table allows that); the number of
primaries grows until every primary stays under its capacity at the peak. One tenant's emits
are serialized by its stream lock, so a tenant larger than that ceiling cannot be served by
any number of primaries: it is reported.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
from collections.abc import Callable, Sequence

DAY = 86_400


def zipf_shares(tenants: int, exponent: float) -> list[float]:
    weights = [1 / (rank**exponent) for rank in range(1, tenants + 1)]
    total = sum(weights)
    return [w / total for w in weights]


def by_hash(loads: Sequence[float], primaries: int, seed: int) -> float:
    """The busiest primary's load when each tenant lands on a random (hashed) primary."""
    rng = random.Random(seed)
    placed = [0.0] * primaries
    for load in loads:
        placed[rng.randrange(primaries)] += load
    return max(placed)


def largest_first(loads: Sequence[float], primaries: int, _seed: int) -> float:
    """The busiest primary's load when tenants go, largest first, to the least loaded."""
    heap = [0.0] * primaries
    for load in sorted(loads, reverse=True):
        heapq.heappush(heap, heapq.heappop(heap) + load)
    return max(heap)


def primaries_needed(
    loads: Sequence[float],
    capacity: float,
    place: Callable[[Sequence[float], int, int], float],
    seed: int,
) -> int:
    count = max(1, math.ceil(sum(loads) / capacity))
    while place(loads, count, seed) > capacity:
        count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deliveries-per-day", type=float, default=1e9)
    parser.add_argument("--peak", type=float, default=5.0, help="peak rate / average rate")
    parser.add_argument("--cpu-us", type=float, default=817.0, help="server CPU per delivery")
    parser.add_argument("--emit-us", type=float, default=1225.0, help="server CPU per emit")
    parser.add_argument("--fan-out", type=float, default=2.0, help="deliveries per event")
    parser.add_argument("--wal-bytes", type=float, default=3870.0)
    parser.add_argument("--stored-bytes", type=float, default=1731.0)
    parser.add_argument("--retention-days", type=float, default=30.0)
    parser.add_argument("--cores", type=int, default=16, help="cores per primary")
    parser.add_argument("--utilization", type=float, default=0.6, help="target at the peak")
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--zipf", type=float, default=1.1)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    peak = args.deliveries_per_day / DAY * args.peak
    capacity = args.cores * args.utilization * 1e6 / args.cpu_us
    loads = [share * peak for share in zipf_shares(args.tenants, args.zipf)]
    tenant_ceiling = 1e6 / args.emit_us * args.fan_out
    print(
        f"peak {peak:,.0f} deliveries/s; one primary ({args.cores} cores at "
        f"{args.utilization:.0%}) {capacity:,.0f}/s"
    )
    print(
        f"largest tenant at the peak {loads[0]:,.0f} deliveries/s; one tenant's ceiling "
        f"(emits serialized by its stream lock) about {tenant_ceiling:,.0f}/s"
    )
    if loads[0] > min(capacity, tenant_ceiling):
        print("  -> the largest tenant alone exceeds it: split its stream (see docs/scaling.md)")
        loads = [min(load, min(capacity, tenant_ceiling)) for load in loads]
    for name, place in (("by hash", by_hash), ("largest first", largest_first)):
        count = primaries_needed(loads, capacity, place, args.seed)
        wal = peak * args.wal_bytes / count / 2**20
        stored = args.deliveries_per_day * args.retention_days * args.stored_bytes / count
        print(
            f"{name:14s} {count:3d} primaries; per primary at the peak {wal:,.0f} MiB/s of "
            f"WAL, {stored / 2**40:,.2f} TiB stored over {args.retention_days:g} days"
        )


if __name__ == "__main__":
    main()
