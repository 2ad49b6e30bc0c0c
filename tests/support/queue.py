"""Claiming by hand, as a worker would, for tests that look at the queue directly."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tidings.domain.scheduling import Lane
from tidings.storage import ClaimedDelivery, DeliveryQueue
from tidings.storage.records import ClaimRequest


def take_everything(lanes: Sequence[Lane]) -> Mapping[str, int]:
    """A plan that asks every lane for all it has (within its cluster-wide room)."""
    return {lane.subscription_id: lane.room if lane.room is not None else 10_000 for lane in lanes}


async def claim_all(
    queue: DeliveryQueue, now_ms: int, lease_ms: int = 30_000
) -> list[ClaimedDelivery]:
    return await queue.claim(ClaimRequest(now_ms, lease_ms, take_everything))
