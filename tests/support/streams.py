"""A steady stream of emits through a fault, and what must hold afterwards: every
acknowledged event delivered, 503 with ``Retry-After`` (never a 500) while the database is
away, no process exited. Shared by the chaos and failover tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.support.processes import Process
from tests.support.receiver import Receiver

EMIT_EVERY = 0.05
"""Seconds between two emits (20 a second)."""


@dataclass
class Stream:
    """A steady stream of emits, noting what the API answered."""

    acknowledged: list[int] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    retry_after: set[str] = field(default_factory=set)
    stopped: bool = False

    def stop(self) -> None:
        """End the stream after the emit under way (before ``seconds`` are up)."""
        self.stopped = True

    async def run(self, base: str, key: str, seconds: float) -> None:
        headers = {"X-Api-Key": key}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as client:
            deadline = time.monotonic() + seconds
            n = 0
            while time.monotonic() < deadline and not self.stopped:
                body = {"type": "client.created", "payload": {"n": n}}
                try:
                    response = await client.post("/api/v1/events", json=body)
                except httpx.TransportError:
                    self.statuses[0] += 1
                else:
                    self.statuses[response.status_code] += 1
                    if response.status_code == 201:
                        self.acknowledged.append(n)
                    elif response.status_code == 503:
                        self.retry_after.add(response.headers.get("Retry-After", ""))
                n += 1
                await asyncio.sleep(EMIT_EVERY)


def arrived(receiver: Receiver) -> list[int]:
    return [json.loads(r.body)["payload"]["n"] for r in receiver.at("/chaos")]


async def subscribe(base: str, key: str, url: str) -> None:
    async with httpx.AsyncClient(base_url=base, headers={"X-Api-Key": key}) as client:
        body = {"url": url, "eventTypes": ["client.created"]}
        response = await client.post("/api/v1/webhooks/subscriptions", json=body)
        assert response.status_code == 201, response.text


async def readiness(base: str) -> int:
    async with httpx.AsyncClient(base_url=base) as client:
        return (await client.get("/readyz")).status_code


async def check_outcome(
    stream: Stream, receiver: Receiver, restored: float, processes: list[Process], what: str
) -> None:
    """Everything acknowledged arrives; report the figures the issue asks for."""
    acknowledged = set(stream.acknowledged)
    try:
        await receiver.wait_for(lambda: acknowledged <= set(arrived(receiver)), timeout=90)
    except TimeoutError:
        lost = sorted(acknowledged - set(arrived(receiver)))
        logs = "\n".join(f"--- {p.log.name}\n{p.log.read_text()[-4000:]}" for p in processes)
        pytest.fail(f"{what}: acknowledged but not delivered: {lost}\n{logs}")
    got = arrived(receiver)
    first_after = min(
        (r.at for r in receiver.at("/chaos") if r.at >= restored), default=float("nan")
    )
    duplicates = len(got) - len(set(got))
    print(
        f"\n{what}: emits {sum(stream.statuses.values())} ({dict(stream.statuses)}), "
        f"acknowledged {len(acknowledged)}, delivered {len(acknowledged & set(got))}, "
        f"lost {len(acknowledged - set(got))}, duplicated {duplicates}, "
        f"delivery resumed {first_after - restored:.1f} s after the database returned"
    )
    assert stream.statuses[500] == 0, "an outage must never answer 500"
    assert stream.statuses[503] > 0, "emits during the outage are refused with 503"
    assert stream.retry_after == {"5"}
    for process in processes:
        assert process.proc.poll() is None, f"{process.log.name} exited:\n{process.log.read_text()}"


@contextlib.asynccontextmanager
async def started(processes: list[Process]) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for process in processes:
            await asyncio.to_thread(process.stop)
