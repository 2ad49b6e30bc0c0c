"""The dispatcher's hot path: claim -> sign -> POST -> record, with writes batched.

Deliveries are rows with a due time. A claim pushes the due time past a lease, so a
worker that dies mid-POST loses nothing: the row falls due again and another claim
retries it (at-least-once). Results are recorded in batches: whatever finished while
the previous batch was being written goes into the next transaction.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

import structlog

from tidings.dispatcher.sender import Sender
from tidings.domain.deliveries import (
    AttemptResult,
    DeliveryStatus,
    DisableReason,
    breaker_tripped,
    judge_attempt,
)
from tidings.domain.ratelimit import Pacer
from tidings.domain.retry import RetryPolicy
from tidings.domain.signatures import signature_headers
from tidings.metrics import Metrics
from tidings.secretbox import SecretBox
from tidings.storage import AttemptOutcome, ClaimedDelivery, DeliveryQueue

log = structlog.get_logger("tidings.dispatcher")

RECORD_WINDOW = 0.02
"""Seconds a finished attempt may wait for others to share its record transaction."""

Disable = Callable[[str, str, DisableReason, int], Awaitable[None]]
"""Disables a subscription, given (tenant id, subscription id, reason, failure streak)."""


class Dispatcher:
    """Claims due deliveries in batches and keeps up to ``concurrency`` of them in hand.

    Each subscription may have ``max_concurrency`` attempts in flight and as many again
    waiting in a local queue (their leases held); claims ask the store for no more than
    that room, so a slow receiver can hold at most its share of the worker.
    """

    def __init__(
        self,
        queue: DeliveryQueue,
        sender: Sender,
        secretbox: SecretBox,
        policy: RetryPolicy,
        disable: Disable,
        *,
        breaker_threshold: int = 20,
        concurrency: int = 200,
        subscription_concurrency: int = 50,
        batch_size: int = 200,
        lease_seconds: float = 30.0,
        poll_interval: float = 1.0,
        metrics: Metrics | None = None,
    ) -> None:
        self._queue = queue
        self._sender = sender
        self._secretbox = secretbox
        self._policy = policy
        self._disable = disable
        self._breaker_threshold = breaker_threshold
        self._concurrency = concurrency
        self._batch_size = min(batch_size, concurrency)
        self._lease_ms = int(lease_seconds * 1000)
        self._poll_interval = poll_interval
        self._inflight: set[asyncio.Task[None]] = set()
        self._finished: list[AttemptOutcome] = []
        self._finished_ready = asyncio.Event()
        self._secrets: dict[str, str] = {}
        self._closing = False
        self._stopping = False
        self._pacer = Pacer(subscription_concurrency)
        self._limits: dict[str, int | None] = {}
        self._queues: dict[str, deque[ClaimedDelivery]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._room_freed = asyncio.Event()
        self._metrics = metrics

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; then hand back what was not started, finish
        what was, and record it."""
        recorder = asyncio.create_task(self._record_loop())
        try:
            while not stop.is_set():
                await self._fill(stop)
        finally:
            self._stopping = True
            for timer in self._timers.values():
                timer.cancel()
            await self._release_queued()
            if self._inflight:
                await asyncio.gather(*self._inflight, return_exceptions=True)
            self._closing = True
            self._finished_ready.set()
            await recorder

    @property
    def _held(self) -> int:
        return len(self._inflight) + sum(len(q) for q in self._queues.values())

    def _room(self) -> Callable[[str], int]:
        """How many more deliveries of a subscription this worker may take: in flight
        plus queued stays within twice its concurrency. A snapshot, because the store
        may call it from its own thread while this loop goes on."""
        held = dict(self._pacer.active)
        for sub_id, queue in self._queues.items():
            held[sub_id] = held.get(sub_id, 0) + len(queue)
        limits = dict(self._limits)
        default = self._pacer.default_concurrency
        return lambda sub_id: 2 * (limits.get(sub_id) or default) - held.get(sub_id, 0)

    async def _fill(self, stop: asyncio.Event) -> None:
        free = self._concurrency - self._held
        if self._held and free < self._batch_size // 4:
            self._room_freed.clear()
            await _first_of(self._room_freed.wait(), stop.wait())
            return
        now = int(time.time() * 1000)
        claimed = await self._queue.claim_due(
            min(free, self._batch_size), self._lease_ms, now, self._room()
        )
        for delivery in claimed:
            self._limits[delivery.subscription_id] = delivery.max_concurrency
            self._queues.setdefault(delivery.subscription_id, deque()).append(delivery)
        for sub_id in {d.subscription_id for d in claimed}:
            self._start_ready(sub_id)
        if not claimed:
            self._room_freed.clear()
            waits = [self._queue.wait_for_work(self._poll_interval), stop.wait()]
            if self._held:
                waits.append(self._room_freed.wait())
            await _first_of(*waits)

    def _start_ready(self, sub_id: str) -> None:
        """Start queued deliveries of ``sub_id`` while its pacing allows."""
        self._timers.pop(sub_id, None)
        queue = self._queues.get(sub_id)
        while queue:
            head = queue[0]
            wait = self._pacer.try_start(
                sub_id, head.max_concurrency, head.rate_limit, time.monotonic()
            )
            if wait is not None:
                if head.rate_limit and sub_id not in self._timers:
                    loop = asyncio.get_running_loop()
                    self._timers[sub_id] = loop.call_later(wait, self._start_ready, sub_id)
                return
            queue.popleft()
            task = asyncio.create_task(self._deliver(head))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
        self._queues.pop(sub_id, None)

    async def _release_queued(self) -> None:
        now = int(time.time() * 1000)
        waiting = [(d, now) for queue in self._queues.values() for d in queue]
        self._queues.clear()
        if waiting:
            await self._queue.release(waiting)

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
            secrets = [self._secret(delivery.secret_enc)]
            if delivery.previous_secret_enc:
                secrets.append(self._secret(delivery.previous_secret_enc))
            headers = signature_headers(secrets, delivery.event_id, int(time.time()), body)
            result = await self._sender.post(delivery.url, body, headers)
        except Exception as exc:  # a bug or a bad stored secret must not wedge the row
            log.exception("deliver_failed", event_id=delivery.event_id)
            result = AttemptResult(None, 0, error=f"internal error: {type(exc).__name__}")
        finished = int(time.time() * 1000)
        verdict = judge_attempt(
            result, delivery.attempt, delivery.event_created_ms, finished, self._policy
        )
        self._pacer.finish(delivery.subscription_id)
        self._finished.append(AttemptOutcome(delivery, result, verdict, finished))
        self._finished_ready.set()
        self._room_freed.set()
        if not self._stopping:
            self._start_ready(delivery.subscription_id)

    async def _record_loop(self) -> None:
        """Record outcomes in batches, at most ``RECORD_WINDOW`` after the first arrived.

        Waiting a moment costs no delivery latency (the receiver already has the event)
        and turns a trickle of one-row transactions into a few larger ones. A crash
        inside the window only means those deliveries are sent again.
        """
        while True:
            await self._finished_ready.wait()
            if not self._closing and len(self._finished) < self._batch_size:
                await asyncio.sleep(RECORD_WINDOW)
            self._finished_ready.clear()
            batch, self._finished = self._finished, []
            if batch:
                await self._record(batch)
            if self._closing and not self._finished:
                return

    async def _record(self, batch: list[AttemptOutcome]) -> None:
        try:
            streaks = await self._queue.record(batch)
        except Exception:
            # The leases run out and the deliveries are retried: at-least-once holds.
            log.exception("record_failed", count=len(batch))
            return
        if self._metrics is not None:
            for o in batch:
                self._metrics.deliveries.labels(
                    "succeeded" if o.result.succeeded else "failed"
                ).inc()
                self._metrics.attempt_seconds.observe(o.result.elapsed_ms / 1000)
        for outcome in batch:
            _log_attempt(outcome)
        gone = {o.claimed.subscription_id: o.claimed for o in batch if o.verdict.disable}
        for sub_id, claimed in gone.items():
            streak = streaks.get(sub_id, 0)
            await self._disable(claimed.tenant_id, sub_id, DisableReason.GONE, streak)
        tenants = {o.claimed.subscription_id: o.claimed.tenant_id for o in batch}
        for sub_id, streak in streaks.items():
            if sub_id not in gone and breaker_tripped(streak, self._breaker_threshold):
                await self._disable(tenants[sub_id], sub_id, DisableReason.BREAKER, streak)


def _log_attempt(outcome: AttemptOutcome) -> None:
    """Every attempt at debug; failures at info, and a delivery given up on as a warning."""
    claimed, result, verdict = outcome.claimed, outcome.result, outcome.verdict
    fields = {
        "event_id": claimed.event_id,
        "subscription_id": claimed.subscription_id,
        "tenant_id": claimed.tenant_id,
        "attempt": claimed.attempt,
        "status_code": result.status_code,
        "elapsed_ms": result.elapsed_ms,
    }
    if result.succeeded:
        log.debug("attempt_succeeded", **fields)
    elif verdict.status is DeliveryStatus.PENDING:
        log.info(
            "attempt_failed", error=result.error, next_attempt_ms=verdict.next_attempt_ms, **fields
        )
    else:
        log.warning("delivery_failed", error=result.error, **fields)


async def _first_of(*waits: Awaitable[object]) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
