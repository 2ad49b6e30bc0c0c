"""The dispatcher's hot path: claim -> sign -> POST -> record, with writes batched.

Deliveries are rows with a due time. A claim pushes the due time past a lease, so a
worker that dies mid-POST loses nothing: the row falls due again and another claim
retries it (at-least-once). Results are recorded in batches: whatever finished while
the previous batch was being written goes into the next transaction.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from tidings.dispatcher.sender import Sender
from tidings.domain.deliveries import (
    AttemptResult,
    DisableReason,
    breaker_tripped,
    judge_attempt,
)
from tidings.domain.ratelimit import Pacer
from tidings.domain.retry import RetryPolicy
from tidings.domain.signatures import signature_headers
from tidings.secretbox import SecretBox
from tidings.storage.base import ClaimedDelivery, Outcome, Store

log = structlog.get_logger("tidings.dispatcher")

MAX_SKIPPED = 500
"""Saturated subscriptions named in one claim query, at most."""

OnDisabled = Callable[[str, str, DisableReason, int], Awaitable[None]]
"""Called with (tenant id, subscription id, reason, failure streak) after a disable."""


class Dispatcher:
    def __init__(
        self,
        store: Store,
        sender: Sender,
        secretbox: SecretBox,
        policy: RetryPolicy,
        on_disabled: OnDisabled,
        *,
        breaker_threshold: int = 20,
        concurrency: int = 200,
        subscription_concurrency: int = 20,
        batch_size: int = 200,
        lease_seconds: float = 30.0,
        poll_interval: float = 1.0,
    ) -> None:
        self._store = store
        self._sender = sender
        self._secretbox = secretbox
        self._policy = policy
        self._on_disabled = on_disabled
        self._breaker_threshold = breaker_threshold
        self._concurrency = concurrency
        self._batch_size = batch_size
        self._lease_ms = int(lease_seconds * 1000)
        self._poll_interval = poll_interval
        self._inflight: set[asyncio.Task[None]] = set()
        self._finished: list[Outcome] = []
        self._finished_ready = asyncio.Event()
        self._secrets: dict[str, str] = {}
        self._closing = False
        self._pacer = Pacer(subscription_concurrency)
        self._limits: dict[str, int | None] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set, then finish in-flight attempts and record them."""
        recorder = asyncio.create_task(self._record_loop())
        try:
            while not stop.is_set():
                await self._fill(stop)
        finally:
            if self._inflight:
                await asyncio.gather(*self._inflight, return_exceptions=True)
            self._closing = True
            self._finished_ready.set()
            await recorder

    async def _fill(self, stop: asyncio.Event) -> None:
        free = self._concurrency - len(self._inflight)
        if free <= 0:
            await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED)
            return
        now = int(time.time() * 1000)
        saturated = self._pacer.saturated(self._limits)[:MAX_SKIPPED]
        claimed = await self._store.claim_due(
            min(free, self._batch_size), self._lease_ms, now, saturated
        )
        deferred = []
        for delivery in claimed:
            self._limits[delivery.subscription_id] = delivery.max_concurrency
            wait = self._pacer.try_start(
                delivery.subscription_id,
                delivery.max_concurrency,
                delivery.rate_limit,
                time.monotonic(),
            )
            if wait is None:
                task = asyncio.create_task(self._deliver(delivery))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
            else:
                deferred.append((delivery, now + int(wait * 1000)))
        await self._store.release(deferred)
        if not claimed:
            await _first_of(self._store.wait_for_work(self._poll_interval), stop.wait())

    def _secret(self, secret_enc: str) -> str:
        secret = self._secrets.get(secret_enc)
        if secret is None:
            if len(self._secrets) > 10_000:
                self._secrets.clear()
            secret = self._secrets[secret_enc] = self._secretbox.decrypt(secret_enc)
        return secret

    async def _deliver(self, delivery: ClaimedDelivery) -> None:
        try:
            body = delivery.body.encode()
            headers = signature_headers(
                [self._secret(delivery.secret_enc)], delivery.event_id, int(time.time()), body
            )
            result = await self._sender.post(delivery.url, body, headers)
        except Exception as exc:  # a bug or a bad stored secret must not wedge the row
            log.exception("deliver_failed", event_id=delivery.event_id)
            result = AttemptResult(None, 0, error=f"internal error: {type(exc).__name__}")
        finished = int(time.time() * 1000)
        verdict = judge_attempt(
            result, delivery.attempt, delivery.event_created_ms, finished, self._policy
        )
        self._pacer.finish(delivery.subscription_id)
        self._finished.append(Outcome(delivery, result, verdict, finished))
        self._finished_ready.set()

    async def _record_loop(self) -> None:
        while True:
            await self._finished_ready.wait()
            self._finished_ready.clear()
            batch, self._finished = self._finished, []
            if batch:
                await self._record(batch)
            if self._closing and not self._finished:
                return

    async def _record(self, batch: list[Outcome]) -> None:
        try:
            streaks = await self._store.record_outcomes(batch)
        except Exception:
            # The leases run out and the deliveries are retried: at-least-once holds.
            log.exception("record_failed", count=len(batch))
            return
        for outcome in batch:
            log.debug(
                "attempt",
                event_id=outcome.claimed.event_id,
                subscription_id=outcome.claimed.subscription_id,
                attempt=outcome.claimed.attempt,
                status_code=outcome.result.status_code,
                outcome=outcome.verdict.status.value,
            )
        gone = {o.claimed.subscription_id: o.claimed for o in batch if o.verdict.disable}
        for sub_id, claimed in gone.items():
            await self._disable(claimed.tenant_id, sub_id, DisableReason.GONE, streaks.get(sub_id))
        tenants = {o.claimed.subscription_id: o.claimed.tenant_id for o in batch}
        for sub_id, streak in streaks.items():
            if sub_id not in gone and breaker_tripped(streak, self._breaker_threshold):
                await self._disable(tenants[sub_id], sub_id, DisableReason.BREAKER, streak)

    async def _disable(
        self, tenant_id: str, sub_id: str, reason: DisableReason, streak: int | None
    ) -> None:
        changed = await self._store.disable_subscription(tenant_id, sub_id, reason)
        if changed is not None:
            log.warning("subscription_disabled", subscription_id=sub_id, reason=reason.value)
            await self._on_disabled(tenant_id, sub_id, reason, streak or 0)


async def _first_of(*waits: Awaitable[object]) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
