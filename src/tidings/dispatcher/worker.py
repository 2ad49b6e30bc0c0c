"""The dispatcher's hot path: claim -> sign -> POST -> record, with writes batched.

Deliveries are rows with a due time. A claim pushes the due time past a lease, so a
worker that dies mid-POST loses nothing: the row falls due again and another claim
retries it (at-least-once). Which rows a claim takes is the scheduler's call
(``domain/scheduling.py``): fair shares of this worker's slots across tenants, then
subscriptions, each subscription held to a limit that adapts to how its receiver
behaves. Pacing (``rateLimit``, ``maxConcurrency``) happens in the claim, in the
database, so it holds for every worker together. What is claimed starts at once, but for
deliveries to quick receivers claimed ahead: they wait, in this worker, for the attempt
before them to end (the scheduler's "Claiming ahead"), for at most ``LONGEST_WAIT``.

Results are recorded in batches: whatever finished while the previous batch was being
written goes into the next transaction. A database outage stops neither loop: claims
wait and retry with a capped backoff; recording keeps its batch and retries it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from tidings.dispatcher.sender import Sender
from tidings.domain.cache import BoundedCache
from tidings.domain.clock import SYSTEM_CLOCK, Clock
from tidings.domain.deliveries import (
    AttemptResult,
    DeliveryStatus,
    DisableReason,
    Failure,
    breaker_tripped,
    judge_attempt,
)
from tidings.domain.retry import RetryPolicy
from tidings.domain.scheduling import STALL_SECONDS, Scheduler, Signal
from tidings.domain.signatures import SignatureScheme, signature_headers
from tidings.metrics import Metrics
from tidings.secretbox import SecretBox
from tidings.storage import AttemptOutcome, ClaimedDelivery, DeliveryQueue
from tidings.storage.errors import Outage, StorageUnavailable
from tidings.storage.records import ClaimRequest, WorkerLane
from tidings.storage.rules import attempt_outcome
from tidings.transform import (
    Cancelled,
    TransformFailed,
    TransformOutcome,
    TransformUnavailable,
    checked_target,
    webhook_text,
)

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from tidings.config import Settings
    from tidings.tracing import Tracing

log = structlog.get_logger("tidings.dispatcher")

RECORD_WINDOW = 0.02
"""Seconds a finished attempt may wait for others to share its record transaction."""

GATHER_WINDOW = 0.01
"""Room freed on a busy subscription is claimed this long later, with whatever else
freed up meanwhile."""

CLAIM_GAP = 0.005
"""Least time from the start of one claim (the end of one that found nothing) to the next
that new work prompts. Notices come in floods (one per event at 1,000 events/s): a claim
at each costs more than the events it finds; new work after a quiet spell is claimed at
once. A claim that a notice prompted (or that dropped one) and that found nothing looks
once more this much later: the emitting host's clock may run a few ms ahead of this
one's, and what it made due be due here a moment later."""

START_CHUNK = 16
"""Deliveries started between two yields to the event loop."""

WATCH_INTERVAL = 0.25
"""Seconds between two looks for attempts that hang."""

LONGEST_WAIT = 2.0
"""Seconds a delivery claimed ahead may wait to start (at most a quarter of its lease);
past it, it goes back to the queue: its receiver is no longer quick, and a change to the
subscription (paused, disabled, a new URL) meanwhile must not wait for a stale claim."""

RELEASE_TIMEOUT = 5.0
"""Seconds a stopping worker waits to give back what it claimed ahead; past it, those
deliveries wait for their leases to end instead."""

REPORT_INTERVAL = 5.0
"""Seconds between two reports of this worker's figures to the database."""

SECRET_CACHE_SIZE = 10_000
SIGNING_THREADS = max(2, os.cpu_count() or 2)
"""RSA signatures are made here, in parallel (the GIL is let go while signing)."""


class Transforms(Protocol):
    """Runs subscriptions' transformations (``tidings.transform.TransformEngine``)."""

    async def run(
        self, tenant_id: str, script: str, webhook: Mapping[str, Any] | str
    ) -> TransformOutcome: ...


Disable = Callable[[str, str, DisableReason, int], Awaitable[None]]
"""Disables a subscription, given (tenant id, subscription id, reason, failure streak)."""


@dataclass(frozen=True)
class DispatcherTuning:
    """How much a worker takes on, and how often it looks (``TIDINGS_*``, through
    :meth:`from_settings`)."""

    concurrency: int = 1000
    """Attempts in flight at once, deliveries claimed ahead included."""
    subscription_concurrency: int = 50
    """The most any one subscription's adaptive limit may reach."""
    batch_size: int = 200
    """Deliveries per claim and results per record transaction (at most ``concurrency``)."""
    lease_seconds: float = 30.0
    """How long a claim lasts: past it, another worker may retry the delivery."""
    poll_interval: float = 1.0
    """Seconds between two looks for due work when no notice of new work comes."""

    @classmethod
    def from_settings(cls, settings: Settings) -> DispatcherTuning:
        return cls(
            concurrency=settings.dispatcher_concurrency,
            subscription_concurrency=settings.subscription_concurrency,
            batch_size=settings.dispatcher_batch_size,
            lease_seconds=settings.lease_seconds,
            poll_interval=settings.dispatcher_poll_interval,
        )


class Dispatcher:
    """Keeps up to ``concurrency`` attempts in flight, claimed as the scheduler decides."""

    def __init__(
        self,
        queue: DeliveryQueue,
        sender: Sender,
        secretbox: SecretBox,
        policy: RetryPolicy,
        disable: Disable,
        *,
        breaker_threshold: int = 20,
        tuning: DispatcherTuning = DispatcherTuning(),
        metrics: Metrics | None = None,
        clock: Clock = SYSTEM_CLOCK,
        worker_id: str | None = None,
        tracing: Tracing | None = None,
        transforms: Transforms | None = None,
        allow_http: bool = False,
    ) -> None:
        self._queue = queue
        self._sender = sender
        self._secretbox = secretbox
        self._policy = policy
        self._disable = disable
        self._breaker_threshold = breaker_threshold
        self._tuning = tuning
        self._batch_size = min(tuning.batch_size, tuning.concurrency)
        self._lease_ms = int(tuning.lease_seconds * 1000)
        self._metrics = metrics
        self._clock = clock
        self._tracing = tracing
        self._transforms = transforms
        self._allow_http = allow_http
        self.worker_id = worker_id or "wrk_" + uuid.uuid4().hex[:16]
        self.scheduler = Scheduler(
            capacity=tuning.concurrency, ceiling=tuning.subscription_concurrency
        )
        self._inflight: set[asyncio.Task[None]] = set()
        self._started: dict[int, tuple[str, float]] = {}
        """Delivery id -> (subscription id, start time) of every attempt in flight, in the
        order they started (the watch loop relies on it)."""
        self._waiting: dict[str, deque[tuple[ClaimedDelivery, float]]] = {}
        """Per subscription, deliveries claimed ahead and the time of their claim (the
        scheduler counts them, in ``Scheduler.waiting``)."""
        self._longest_wait = min(LONGEST_WAIT, tuning.lease_seconds / 4)
        self._releases: set[asyncio.Task[None]] = set()
        self._finished: list[AttemptOutcome] = []
        self._finished_ready = asyncio.Event()
        self._room_freed = asyncio.Event()
        self._secrets: BoundedCache[str, str] = BoundedCache(SECRET_CACHE_SIZE)
        self._static_headers: BoundedCache[str, dict[str, str]] = BoundedCache(SECRET_CACHE_SIZE)
        self._signer = ThreadPoolExecutor(SIGNING_THREADS, thread_name_prefix="tidings-sign")
        """Threads start on first use and end with ``run``."""
        self._stopping = False
        """Nothing new starts: ``run`` is finishing what is in flight."""
        self._closing = False
        """Everything has finished: the recorder writes what is left and ends."""
        self._claims = Outage("claim")
        self._prompted = False
        """New work prompted the next claim (see ``CLAIM_GAP``)."""
        self._repair_due = False
        self._records = Outage("record")

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; then finish what is in flight and record it."""
        recorder = asyncio.create_task(self._record_loop())
        reporter = asyncio.create_task(self._report_loop(stop))
        watcher = asyncio.create_task(self._watch_loop(stop))
        try:
            while not stop.is_set():
                await self._fill(stop)
        finally:
            self._stopping = True
            self._give_back(self._waiting_until(float("inf")))
            if self._inflight:
                await asyncio.gather(*self._inflight, return_exceptions=True)
            if self._releases:
                _, late = await asyncio.wait(self._releases, timeout=RELEASE_TIMEOUT)
                for task in late:
                    task.cancel()
                if late:
                    log.warning("release_abandoned", batches=len(late))
            self._closing = True
            self._finished_ready.set()
            await recorder
            for task in (reporter, watcher):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._signer.shutdown(wait=False)

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    @property
    def _waiting_count(self) -> int:
        return sum(self.scheduler.waiting.values())

    @property
    def claims_failing(self) -> bool:
        """Claims fail for want of the database (readiness says so)."""
        return self._claims.ongoing

    async def _fill(self, stop: asyncio.Event) -> None:
        """Claim once, then wait until claiming again can find something.

        New work (a NOTIFY, a poll) is claimed at once, unless the last claim was a moment
        ago (``CLAIM_GAP``): that is what keeps an idle tenant's latency low.
        Room freed on a subscription this worker had saturated is claimed after
        ``GATHER_WINDOW``, so a busy receiver's completions are refilled in batches rather
        than with a transaction each; new work meanwhile cuts the window short.
        """
        free = self._tuning.concurrency - len(self._inflight) - self._waiting_count
        if free <= 0:
            self._room_freed.clear()
            await _first_of(self._room_freed.wait(), stop.wait())
            return
        wanted = min(free, self._batch_size)
        now = self._clock.monotonic()
        skip = self.scheduler.saturated(now)
        request = ClaimRequest(
            now_ms=self._clock.now_ms(),
            lease_ms=self._lease_ms,
            plan=self.scheduler.planner(wanted, now),
            skip=skip,
        )
        self._room_freed.clear()
        prompted = self._queue.forget_work() or self._prompted
        self._prompted = False
        try:
            claimed = await self._queue.claim(request)
        except StorageUnavailable as exc:
            self._repair_due = True
            await self._claims.failed(exc, stop)
            return
        self._claims.succeeded()
        await self._start_all(claimed)
        if self._repair_due:
            await self._repair_after_outage()
        if len(claimed) >= wanted:
            return  # held back by our own batch size: there may well be more
        if prompted and not claimed:
            await _first_of(asyncio.sleep(CLAIM_GAP), stop.wait())
            return
        last = now if claimed else self._clock.monotonic()
        self._prompted = await self._wait_for_more(stop, room=bool(skip or claimed))
        if self._prompted:
            await asyncio.sleep(max(0.0, CLAIM_GAP - (self._clock.monotonic() - last)))

    async def _wait_for_more(self, stop: asyncio.Event, *, room: bool) -> bool:
        """Wait for new work (or the poll), for ``stop``, or, with ``room``, for room to
        free and then ``GATHER_WINDOW`` unless new work comes first. True: new work came."""
        work = asyncio.ensure_future(self._queue.wait_for_work(self._tuning.poll_interval))
        freed = asyncio.ensure_future(self._room_freed.wait())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            waits = [work, stopped, freed] if room else [work, stopped]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if not work.done() and freed.done():
                await asyncio.wait(
                    [work, stopped], timeout=GATHER_WINDOW, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            for task in (work, freed, stopped):
                task.cancel()
        return work.done() and not work.cancelled()

    async def _repair_after_outage(self) -> None:
        """An outage can fall between an emit's commit and its lanes' wake (PostgreSQL
        wakes just after the commit), leaving a lane asleep with work. Repair finds such
        lanes; run at once when the database is back, not at the next retention run."""
        try:
            woken = await self._queue.repair(self._clock.now_ms())
        except StorageUnavailable:
            return  # still due: the next claim will most likely fail as well
        except Exception:  # a bug, or a statement cancelled: retention repairs later
            log.exception("repair_failed")
            self._repair_due = False
            return
        self._repair_due = False
        log.info("repaired_after_outage", lanes=woken)

    async def _start_all(self, claimed: list[ClaimedDelivery]) -> None:
        """Start the claimed deliveries, the least served tenants' first, a few at a time:
        each start costs the event loop signing and request setup, and a burst of
        hundreds would hold up everything else it serves (the API, in ``serve``). Those
        claimed ahead wait for room."""
        held = self.scheduler.tenant_held
        claimed.sort(key=lambda d: held.get(d.tenant_id, 0))
        now = self._clock.monotonic()
        for first in range(0, len(claimed), START_CHUNK):
            if first:
                await asyncio.sleep(0)
            for delivery in claimed[first : first + START_CHUNK]:
                sub_id = delivery.subscription_id
                self.scheduler.cap(sub_id, delivery.max_concurrency, delivery.rate_limit)
                if self.scheduler.room(sub_id) > 0 and sub_id not in self._waiting:
                    self._start(delivery)
                else:
                    self._wait(delivery, now)

    def _wait(self, delivery: ClaimedDelivery, now: float) -> None:
        sub_id = delivery.subscription_id
        self._waiting.setdefault(sub_id, deque()).append((delivery, now))
        self.scheduler.wait(sub_id, delivery.tenant_id)

    def _pop_waiting(self, sub_id: str) -> tuple[ClaimedDelivery, float]:
        """The subscription's oldest waiting delivery, and the time it was claimed."""
        queue = self._waiting[sub_id]
        first = queue.popleft()
        if not queue:
            del self._waiting[sub_id]
        self.scheduler.stop_waiting(sub_id)
        return first

    def _start_waiting(self, sub_id: str) -> None:
        """Start the subscription's waiting deliveries that have room now; give back
        those that waited too long (the watch loop may be late)."""
        oldest = self._clock.monotonic() - self._longest_wait
        stale = []
        while sub_id in self._waiting and self.scheduler.room(sub_id) > 0 and not self._stopping:
            delivery, claimed = self._pop_waiting(sub_id)
            if claimed < oldest:
                stale.append(delivery)
            else:
                self._start(delivery)
        self._give_back(stale)

    def _waiting_until(self, claimed_before: float) -> list[ClaimedDelivery]:
        """Take out the waiting deliveries claimed before ``claimed_before``."""
        return [
            d for sub_id in list(self._waiting) for d in self._take_waiting(sub_id, claimed_before)
        ]

    def _take_waiting(self, sub_id: str, claimed_before: float) -> list[ClaimedDelivery]:
        taken = []
        while sub_id in self._waiting and self._waiting[sub_id][0][1] < claimed_before:
            taken.append(self._pop_waiting(sub_id)[0])
        return taken

    def _give_back(self, deliveries: list[ClaimedDelivery]) -> None:
        """Give deliveries that were never started back to the queue, due now, in the
        background: nothing that watches or starts attempts waits for the database."""
        if deliveries:
            task = asyncio.create_task(self._release(deliveries))
            self._releases.add(task)
            task.add_done_callback(self._releases.discard)

    async def _release(self, deliveries: list[ClaimedDelivery]) -> None:
        """If the database cannot take them back, their leases run out instead."""
        now = self._clock.now_ms()
        try:
            await self._queue.release([(d, now) for d in deliveries])
        except Exception as exc:
            log.warning("release_failed", count=len(deliveries), error=type(exc).__name__)

    def _start(self, delivery: ClaimedDelivery) -> None:
        now = self._clock.monotonic()
        self.scheduler.started(delivery.subscription_id, delivery.tenant_id, now)
        if not delivery.transformation:  # else its stall clock starts after the script
            self._mark_started(delivery, now)
        task = asyncio.create_task(self._deliver(delivery))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    def _mark_started(self, delivery: ClaimedDelivery, now: float) -> None:
        """Moved to the end if there already (a lapsed lease claimed again): the order of
        ``_started`` stays the order of start times."""
        self._started.pop(delivery.delivery_id, None)
        self._started[delivery.delivery_id] = (delivery.subscription_id, now)

    def _secret(self, secret_enc: str) -> str:
        secret = self._secrets.get(secret_enc)
        if secret is None:
            secret = self._secrets.put(secret_enc, self._secretbox.decrypt(secret_enc))
        return secret

    async def _deliver(self, delivery: ClaimedDelivery) -> None:
        started = self._clock.monotonic()
        tracing = self._tracing
        span = tracing.start_attempt(delivery) if tracing is not None else None
        try:
            request = await self._request(delivery)
            if isinstance(request, AttemptResult):
                result = request
            else:
                url, body = request
                if delivery.transformation:  # the receiver's clocks start now
                    started = self._clock.monotonic()
                    self._mark_started(delivery, started)
                secrets = [self._secret(delivery.secret_enc)]
                if delivery.previous_secret_enc:
                    secrets.append(self._secret(delivery.previous_secret_enc))
                timestamp = self._clock.now_ms() // 1000
                headers = await self._headers(delivery, secrets, timestamp, body)
                if delivery.propagate_trace:
                    _propagate(headers, delivery, tracing, span)
                result = await self._sender.post(url, body, headers)
        except Exception as exc:  # a bug or a bad stored secret must not wedge the row
            log.exception("deliver_failed", event_id=delivery.event_id)
            error = f"internal error: {type(exc).__name__}"
            result = AttemptResult(None, 0, error=error, failure=Failure.INTERNAL)
        except BaseException:  # cancelled: the lease runs out, the delivery is sent again
            if span is not None:
                span.end()
            raise
        finished = self._clock.now_ms()
        self._started.pop(delivery.delivery_id, None)
        verdict = judge_attempt(
            result,
            delivery.attempt,
            delivery.window_start_ms,
            finished,
            self._policy,
            delivery.retry,
        )
        self.scheduler.finished(
            delivery.subscription_id,
            delivery.tenant_id,
            _signal(result),
            result.elapsed_ms,
            started,
            self._clock.monotonic(),
        )
        if tracing is not None and span is not None:
            tracing.end_attempt(span, result, verdict)
        self._finished.append(AttemptOutcome(delivery, result, verdict, finished))
        self._finished_ready.set()
        if not verdict.disable:  # else the subscription is being disabled: nothing more
            self._start_waiting(delivery.subscription_id)
        self._room_freed.set()

    async def _request(self, delivery: ClaimedDelivery) -> tuple[str, bytes] | AttemptResult:
        """The URL and body to send: the stored ones, or what the subscription's
        transformation made of them; or, when it cancelled or failed, the attempt's result
        (nothing is sent). An engine that cannot run at all is our own trouble: the
        delivery is tried again, and the receiver's breaker does not count it."""
        if not delivery.transformation:
            return delivery.url, delivery.body.encode()
        if self._transforms is None:
            raise RuntimeError("a transformation, and no engine to run it")
        started = self._clock.monotonic()
        webhook = webhook_text(delivery.url, delivery.event_type, delivery.body)
        try:
            outcome = await self._transforms.run(
                delivery.tenant_id, delivery.transformation, webhook
            )
        except TransformUnavailable as exc:
            log.warning("transformation_unavailable", error=str(exc))
            return AttemptResult(
                None,
                int((self._clock.monotonic() - started) * 1000),
                error=f"transformations cannot run now: {exc}",
                failure=Failure.UNAVAILABLE,
            )
        elapsed_ms = int((self._clock.monotonic() - started) * 1000)
        outcome = checked_target(outcome, delivery.url, self._allow_http)
        if isinstance(outcome, Cancelled):
            return AttemptResult(
                None, elapsed_ms, error="cancelled by the transformation", failure=Failure.CANCELLED
            )
        if isinstance(outcome, TransformFailed):
            return AttemptResult(
                None, elapsed_ms, error=f"transformation: {outcome}", failure=Failure.TRANSFORMATION
            )
        return outcome.url, outcome.body.encode()

    async def _headers(
        self, delivery: ClaimedDelivery, secrets: list[str], timestamp: int, body: bytes
    ) -> dict[str, str]:
        """The subscription's static headers, then the signature headers of its scheme.
        An RSA signature costs 1-7 ms of CPU (2048-4096 bits) and the ``cryptography``
        package lets go of the GIL meanwhile: it is made on the signing threads (their
        own pool, so a burst of RSA deliveries does not queue DNS lookups behind it), and
        neither stalls other deliveries nor keeps to one core."""
        headers = dict(self._static(delivery.headers_enc)) if delivery.headers_enc else {}
        scheme = delivery.signature_scheme
        args = (secrets, delivery.event_id, timestamp, body, scheme)
        if scheme is SignatureScheme.RSA_SHA256:
            loop = asyncio.get_running_loop()
            return headers | await loop.run_in_executor(self._signer, signature_headers, *args)
        return headers | signature_headers(*args)

    def _static(self, headers_enc: str) -> dict[str, str]:
        headers = self._static_headers.get(headers_enc)
        if headers is None:
            decrypted = json.loads(self._secretbox.decrypt(headers_enc))
            headers = self._static_headers.put(headers_enc, decrypted)
        return headers

    async def _record_loop(self) -> None:
        """Record outcomes in batches, at most ``RECORD_WINDOW`` after the first arrived.

        Waiting a moment costs no delivery latency (the receiver already has the event)
        and turns a trickle of one-row transactions into a few larger ones. A crash
        inside the window only means those deliveries are sent again. What piled up
        meanwhile (a wave of slow receivers' answers: thousands) is written a claim's
        batch per transaction, so the claims that refill the slots, which share SQLite's
        one writer, wait behind one of them rather than behind the whole wave.
        """
        while True:
            await self._finished_ready.wait()
            if not self._closing and len(self._finished) < self._batch_size:
                await asyncio.sleep(RECORD_WINDOW)
            self._finished_ready.clear()
            batch, self._finished = self._finished, []
            for first in range(0, len(batch), self._batch_size):
                await self._record(batch[first : first + self._batch_size])
            if self._closing and not self._finished:
                return

    async def _record(self, batch: list[AttemptOutcome]) -> None:
        """Record ``batch``, retrying through a database outage for as long as its leases
        last: past them another worker may send the deliveries again, and the claim token
        keeps this late record from moving them on (at-least-once either way)."""
        give_up = self._clock.monotonic() + self._lease_ms / 1000
        while True:
            try:
                streaks = await self._queue.record(batch)
            except StorageUnavailable as exc:
                if self._clock.monotonic() > give_up or self._closing:
                    log.error("record_abandoned", count=len(batch), error=type(exc).__name__)
                    return
                await self._records.failed(exc)
                continue
            except Exception:  # a bug: the leases run out and the deliveries are retried
                log.exception("record_failed", count=len(batch))
                return
            self._records.succeeded()
            break
        if self._metrics is not None:
            for o in batch:
                self._metrics.deliveries.labels(attempt_outcome(o.result)).inc()
                self._metrics.attempt_seconds.observe(o.result.elapsed_ms / 1000)
        for outcome in batch:
            _log_attempt(outcome)
        gone = {o.claimed.subscription_id: o.claimed for o in batch if o.verdict.disable}
        for sub_id, claimed in gone.items():
            streak = streaks.get(sub_id, 0)
            await self._stop_subscription(claimed.tenant_id, sub_id, DisableReason.GONE, streak)
        claims = {o.claimed.subscription_id: o.claimed for o in batch}
        for sub_id, streak in streaks.items():
            if sub_id not in gone and breaker_tripped(streak, self._threshold(claims[sub_id])):
                tenant_id = claims[sub_id].tenant_id
                await self._stop_subscription(tenant_id, sub_id, DisableReason.BREAKER, streak)

    async def _stop_subscription(
        self, tenant_id: str, sub_id: str, reason: DisableReason, streak: int
    ) -> None:
        """Disable ``sub_id``. What waits for it here is dropped, not given back: the
        disable pauses or cancels it (taking this worker's leases with it), and a release
        racing the disable would make it claimable for a moment. If disabling fails, it
        goes back to the queue instead, and recording goes on."""
        dropped = self._take_waiting(sub_id, float("inf"))
        if dropped:
            self._room_freed.set()
        try:
            await self._disable(tenant_id, sub_id, reason, streak)
        except Exception:
            log.exception("disable_failed", subscription_id=sub_id, reason=reason.value)
            self._give_back(dropped)

    def _threshold(self, claimed: ClaimedDelivery) -> int:
        """The subscription's own breaker threshold, else the instance's."""
        rules = claimed.retry
        if rules is not None and rules.breaker_threshold is not None:
            return rules.breaker_threshold
        return self._breaker_threshold

    def lanes(self) -> list[WorkerLane]:
        """What this worker holds now, per subscription."""
        scheduler = self.scheduler
        return [
            WorkerLane(sub_id, scheduler.tenant_of[sub_id], held, scheduler.limit(sub_id).value)
            for sub_id, held in sorted(scheduler.held.items())
        ]

    async def _watch_loop(self, stop: asyncio.Event) -> None:
        """Notice attempts that hang, long before their timeout ends them; give back
        deliveries that have waited too long behind them."""
        while not stop.is_set():
            await _first_of(stop.wait(), timeout=WATCH_INTERVAL)
            now = self._clock.monotonic()
            for sub_id, started in self._old_enough_to_stall(now):
                self.scheduler.stalled(sub_id, started, now)
            stale = self._waiting_until(now - self._longest_wait)
            if stale:
                log.info("waiting_given_back", count=len(stale))
                self._give_back(stale)
                self._room_freed.set()

    def _old_enough_to_stall(self, now: float) -> Iterator[tuple[str, float]]:
        """The attempts in flight for ``STALL_SECONDS`` or more. ``_started`` is in start
        order, so the look ends at the first younger one: a worker holds thousands of
        attempts, nearly all of them young."""
        young = now - STALL_SECONDS
        return itertools.takewhile(lambda entry: entry[1] <= young, self._started.values())

    async def _report_loop(self, stop: asyncio.Event) -> None:
        """Publish this worker's figures, so any process can show them (/metrics, portal)."""
        outage = Outage("report_lanes")
        while not stop.is_set():
            await _first_of(stop.wait(), timeout=REPORT_INTERVAL)
            now = self._clock.monotonic()
            self.scheduler.forget_idle(now)
            try:
                await self._queue.report_lanes(
                    self.worker_id, self._tuning.concurrency, self.lanes(), self._clock.now_ms()
                )
            except StorageUnavailable as exc:
                outage.noted(exc)
            else:
                outage.succeeded()


def _propagate(
    headers: dict[str, str], delivery: ClaimedDelivery, tracing: Tracing | None, span: Span | None
) -> None:
    """``propagateTrace``: the attempt span's ``traceparent``; with tracing off in this
    process, the one stored with the event (an API process that traces emitted it)."""
    if tracing is not None and span is not None:
        parent = tracing.traceparent(span)
    else:
        parent = delivery.trace_context
    if parent:
        headers["traceparent"] = parent


def _signal(result: AttemptResult) -> Signal:
    if result.congested:
        return Signal.CONGESTED
    if result.status_code is not None:
        return Signal.ANSWERED
    return Signal.NEUTRAL


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


async def _first_of(*waits: Awaitable[object], timeout: float | None = None) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
