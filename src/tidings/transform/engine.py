"""The transformation engine: a small pool of QuickJS processes, fed in batches.

Why processes, measured (``bench/transform.py``, docs in the package's ``__init__``):
QuickJS costs ~20 µs a call but holds the GIL while a script runs, and its time limit
does not interrupt everything (a backtracking regular expression runs on), so run in this
process one bad script would stall every delivery, the API and the event loop. A pipe
round trip to a pool process costs more than the call itself, but batching spreads it:
jobs that arrive while a process is busy go together in its next frame.

Fairness: jobs wait in one queue per tenant and a batch takes them round-robin across
tenants, so one tenant's backlog never sits in front of another's. A pool process stops a
batch once it has run for the time limit (the rest come back "deferred" and are queued
again, in front), so a batch never holds a process much longer than one time limit
however slow its scripts are; and once a tenant's job runs out of time or memory, the
process defers that tenant's other jobs in the batch at once.

A looping script stalls only its pool process, and for at most the time limit; one that
outlives even the hard deadline (``_worker``'s watchdog) ends its process, which is
replaced: the job it was on is failed (the process writes the index of the job it is on
into a shared page), and the batch's other jobs are run again one at a time, so no
innocent job is failed or held back by a second death. A *tenant* whose script ran out of
time or memory (or ended its process) is a *suspect* for a while, whatever its scripts
(an edited script is a new key, not a new tenant): its runs go one at a time, one in
flight at most per tenant and ``workers - 1`` for all suspects together, so a tenant
whose scripts keep looping cannot take the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import importlib.util
import json
import mmap
import os
import signal
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from tidings.domain.cache import BoundedCache
from tidings.supervision import MAX_CRASHES, RESTART_DELAY, Fatal, TaskState, supervise
from tidings.transform import _worker
from tidings.transform.outcomes import (
    Cancelled,
    Transformed,
    TransformFailed,
    TransformOutcome,
    TransformUnavailable,
)

log = structlog.get_logger("tidings.transform")

MISSING_ENGINE = (
    "transformations need the JavaScript engine, which is not installed: "
    "pip install 'tidings[transform]'"
)
MAX_SCRIPT_CHARS = 64_000
DEFAULT_TIME_LIMIT = 0.05
DEFAULT_MEMORY_LIMIT = 32 * 1024 * 1024
DEFAULT_WORKERS = 2
DEFAULT_BATCH_SIZE = 64
DEFAULT_CACHE_SIZE = 256
"""Compiled scripts each pool process keeps (a context costs ~75 KB and ~0.5 ms to make)."""
MAX_BATCH_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_OUTPUT = 1_048_576
"""Bytes a transformed body may have (the service passes ``max_request_bytes``)."""
DEFAULT_PROCESS_MEMORY = 256 * 1024 * 1024
REVIVE_AFTER = 30.0
"""Bytes the cached contexts of one pool process may hold together."""
ADDRESS_SPACE_SLACK = 512 * 1024 * 1024
"""Address space a pool process may map beyond its cache budget and two scripts' limits
(the interpreter's own, the batch's input and output): ``RLIMIT_AS`` is set from it."""
SUSPECT_SECONDS = 300.0
"""How long a tenant whose script ran out of time or memory (or ended its process) runs
apart."""
START_TIMEOUT = 30.0
"""Seconds a new pool process has to import QuickJS and say it is ready."""
MAX_REQUEUES = 3
"""Times a job is run again because its process died under another job's script."""
_WORKER_SCRIPT = Path(_worker.__file__)


@functools.cache
def engine_installed() -> bool:
    """Whether QuickJS (the ``transform`` extra) can be imported (asked once: the answer
    is cached, ``engine_installed.cache_clear()`` asks again)."""
    try:
        return importlib.util.find_spec("quickjs") is not None
    except (ImportError, ValueError):
        return False


def script_key(tenant_id: str, script: str) -> str:
    """A compiled script's name in a pool process: one context per tenant and script, so
    no tenant sees another's globals, even when both run the same text."""
    return hashlib.sha256(f"{tenant_id}\0{script}".encode()).hexdigest()


_Reply = tuple[list[Any], Transformed | Cancelled | None]


@dataclass(eq=False)
class _Job:
    key: str
    tenant: str
    script: str
    text: bytes | None
    """The webhook as JSON text, or None to only compile the script (a check)."""
    future: asyncio.Future[_Reply]
    keep: bool = True
    requeued: int = 0


class _Lost(Exception):
    """A pool process died or had to be killed during a batch."""

    def __init__(self, progress: int, returncode: int | None, timed_out: bool) -> None:
        super().__init__(f"transform process lost (status {returncode}, job {progress})")
        self.progress = progress
        self.returncode = returncode
        self.timed_out = timed_out


class _StartFailed(Exception):
    pass


@dataclass(eq=False)
class _Slot:
    """One pool process (started when first needed, replaced when it dies) and the page
    it writes its progress into."""

    index: int
    process: asyncio.subprocess.Process | None = None
    page: mmap.mmap | None = None
    page_fd: int = -1
    batch: list[_Job] | None = None
    """The batch it is running (resolved by ``close`` if its feeder is cancelled)."""
    state: TaskState = field(init=False)

    def __post_init__(self) -> None:
        self.state = TaskState(f"transform-{self.index}")

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def progress(self) -> int:
        assert self.page is not None
        value: int = _worker.PROGRESS.unpack_from(self.page, 0)[0]
        return value

    def open_page(self) -> None:
        if self.page is not None:
            return
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("tidings-transform-progress")
        else:  # pragma: no cover - not Linux
            with tempfile.TemporaryFile() as handle:
                fd = os.dup(handle.fileno())
        os.ftruncate(fd, _worker.PROGRESS.size)
        self.page_fd = fd
        self.page = mmap.mmap(fd, _worker.PROGRESS.size)

    async def stop(self) -> None:
        """End the process: close its input (it exits at the end of it), then kill it."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.returncode is None:
            if process.stdin is not None:
                process.stdin.close()
            try:
                async with asyncio.timeout(1.0):
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        else:
            await process.wait()

    def close_page(self) -> None:
        if self.page is not None:
            self.page.close()
            self.page = None
        if self.page_fd >= 0:
            os.close(self.page_fd)
            self.page_fd = -1


class TransformEngine:
    """Runs tenants' transformation scripts; one per process, shared by every delivery.

    ``run`` never raises for what a script does (that is a :class:`TransformFailed`); it
    raises :class:`TransformUnavailable` when the engine itself cannot run (closed, or its
    processes keep failing to start). It starts its processes when first used; ``close``
    ends them.
    """

    def __init__(
        self,
        *,
        workers: int = DEFAULT_WORKERS,
        time_limit: float = DEFAULT_TIME_LIMIT,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
        batch_size: int = DEFAULT_BATCH_SIZE,
        cache_size: int = DEFAULT_CACHE_SIZE,
        hard_deadline: float | None = None,
        python: str = sys.executable,
        max_output: int = DEFAULT_MAX_OUTPUT,
        process_memory: int = DEFAULT_PROCESS_MEMORY,
        address_space: int | None = None,
    ) -> None:
        if workers < 1 or batch_size < 1 or cache_size < 1:
            raise ValueError("workers, batch_size and cache_size must be at least 1")
        if time_limit <= 0 or memory_limit <= 0:
            raise ValueError("time_limit and memory_limit must be positive")
        self.workers = workers
        self.time_limit = time_limit
        self.memory_limit = memory_limit
        self.batch_size = batch_size
        self.cache_size = cache_size
        self.hard_deadline = hard_deadline or max(4 * time_limit, time_limit + 0.5)
        """Wall-clock seconds one compile or one run may take before its process is ended
        (the time limit stops ordinary loops well before; this stops what it cannot)."""
        self.python = python
        self.max_output = max_output
        self.process_memory = process_memory
        self.address_space = (
            process_memory + 2 * memory_limit + ADDRESS_SPACE_SLACK
            if address_space is None
            else address_space
        )
        """Bytes a pool process may map beyond what it has once started (0: no cap)."""
        self._slots = [_Slot(index) for index in range(workers)]
        self._queues: dict[str, deque[_Job]] = {}
        """Jobs waiting, by tenant (in round-robin order)."""
        self._suspect_queues: dict[str, deque[_Job]] = {}
        """Suspect tenants' jobs waiting, by tenant."""
        self._solo: deque[_Job] = deque()
        """Jobs whose process died under another job: each runs alone, first."""
        self._suspects: BoundedCache[str, float] = BoundedCache(10_000)
        """Suspect tenants, until when."""
        self._suspect_running: set[str] = set()
        self._suspect_slots = max(1, workers - 1)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stop: asyncio.Event | None = None
        self._closed = False
        self._broken = False
        self._broken_at = 0.0
        self.revive_after = REVIVE_AFTER
        """Seconds after the pool gave up before a run starts it afresh: a cause that
        passes (a full disk, a package being upgraded) does not need a restart of tidings."""
        self.restart_delay = RESTART_DELAY
        self.max_crashes = MAX_CRASHES
        """A process feeder that crashed (say, its process could not start) is started
        again after ``restart_delay``; after ``max_crashes`` in a minute the engine gives
        up: runs raise TransformUnavailable and ``healthy`` is False."""

    # --- the interface --------------------------------------------------------------

    async def run(
        self,
        tenant_id: str,
        script: str,
        webhook: Mapping[str, Any] | str,
        *,
        keep: bool = True,
    ) -> TransformOutcome:
        """Run ``script``'s ``handler`` on ``webhook``: the object (``webhook_for``) or its
        JSON text (``webhook_text``, around a body already printed). ``keep=False`` (a dry
        run) forgets the compiled script afterwards."""
        if not engine_installed():
            return TransformFailed("error", MISSING_ENGINE)
        if isinstance(webhook, str):
            text = webhook.encode()
        else:
            # what JSON.parse reads from it is all that counts here (the body's exact
            # bytes are printed from what comes back), so the C encoder will do
            try:
                text = json.dumps(
                    webhook, separators=(",", ":"), ensure_ascii=False, allow_nan=False
                ).encode()
            except (TypeError, ValueError) as exc:
                return TransformFailed("error", f"the webhook is not JSON: {exc}")
        key = script_key(tenant_id, script)
        result, outcome = await self._submit(key, tenant_id, script, text, keep)
        return outcome if outcome is not None else _failed(result)

    async def compile_check(self, script: str, tenant_id: str = "") -> TransformFailed | None:
        """None if ``script`` compiles and defines ``handler``; else why not (for saving:
        a 422 with the message and line). The script's top level runs, in the sandbox."""
        if len(script) > MAX_SCRIPT_CHARS:
            return TransformFailed("error", f"the script is longer than {MAX_SCRIPT_CHARS} chars")
        if not engine_installed():
            return TransformFailed("error", MISSING_ENGINE)
        result, _ = await self._submit(script_key("", script), tenant_id, script, None, False)
        return None if result[0] == "checked" else _failed(result)

    async def close(self) -> None:
        """End the pool's processes; runs waiting or in flight raise TransformUnavailable."""
        self._closed = True
        if self._stop is not None:
            self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        why = "the transformation engine is closed"
        for slot in self._slots:
            self._fail(slot.batch or [], why)  # a feeder cancelled mid-batch
            slot.batch = None
            await slot.stop()
            slot.close_page()
        self._fail_waiting(why)

    def pids(self) -> list[int]:
        """The pool's live processes (for metrics and tests)."""
        return [slot.process.pid for slot in self._slots if slot.process and slot.alive]

    @property
    def healthy(self) -> bool:
        """False once the pool gave up (its processes kept failing): runs raise."""
        return not self._broken

    # --- queueing ---------------------------------------------------------------------

    async def _submit(
        self, key: str, tenant: str, script: str, text: bytes | None, keep: bool
    ) -> _Reply:
        if self._closed:
            raise TransformUnavailable("the transformation engine is closed")
        if self._broken:
            if time.monotonic() - self._broken_at < self.revive_after:
                raise TransformUnavailable("the transformation engine's processes keep failing")
            self._revive()
        self._start()
        future = asyncio.get_running_loop().create_future()
        job = _Job(key, tenant, script, text, future, keep)
        self._queue_for(tenant).append(job)
        self._wake.set()
        return await job.future

    def _is_suspect(self, tenant: str) -> bool:
        until = self._suspects.get(tenant)
        return until is not None and until > time.monotonic()

    def _queue_for(self, tenant: str) -> deque[_Job]:
        queues = self._suspect_queues if self._is_suspect(tenant) else self._queues
        queue = queues.get(tenant)
        if queue is None:
            queue = queues[tenant] = deque()
        return queue

    def _revive(self) -> None:
        """Start the pool again after it gave up: each feeder that ended starts anew."""
        log.info("transform_engine_revived")
        self._broken = False
        for index, (slot, task) in enumerate(zip(self._slots, self._tasks, strict=True)):
            if task.done():
                slot.state.crashes.clear()
                slot.state.failed = False
                self._tasks[index] = asyncio.create_task(
                    self._supervised(slot), name=slot.state.name
                )

    def _start(self) -> None:
        if self._tasks:
            return
        self._stop = asyncio.Event()
        for slot in self._slots:
            task = asyncio.create_task(self._supervised(slot), name=slot.state.name)
            self._tasks.append(task)

    async def _supervised(self, slot: _Slot) -> None:
        assert self._stop is not None
        try:
            await supervise(
                slot.state,
                lambda: self._serve(slot),
                self._stop,
                max_crashes=self.max_crashes,
                delay=self.restart_delay,
            )
        except Fatal:
            self._broken, self._broken_at = True, time.monotonic()
            self._fail_waiting("the transformation engine's processes keep failing")

    def _fail_waiting(self, why: str) -> None:
        queues = [self._solo, *self._queues.values(), *self._suspect_queues.values()]
        self._queues.clear()
        self._suspect_queues.clear()
        self._solo = deque()
        for queue in queues:
            self._fail(queue, why)

    @staticmethod
    def _fail(jobs: Iterable[_Job], why: str) -> None:
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(TransformUnavailable(why))

    async def _take(self) -> tuple[list[_Job], str | None]:
        """The next batch for a free process, and the suspect tenant it is for (if so)."""
        while True:
            while self._solo:
                job = self._solo.popleft()
                if not job.future.done():
                    return [job], None
            tenant = self._take_suspect()
            if tenant is not None:
                job = self._suspect_queues[tenant].popleft()
                if not self._suspect_queues[tenant]:
                    del self._suspect_queues[tenant]
                self._suspect_running.add(tenant)
                return [job], tenant
            batch = self._take_round_robin()
            if batch:
                return batch, None
            self._wake.clear()
            await self._wake.wait()

    def _take_suspect(self) -> str | None:
        """A suspect tenant whose next job may run now (none of its own is running and
        suspects hold fewer than ``workers - 1`` processes); tenants that are no longer
        suspects go back to the ordinary queues."""
        for tenant in list(self._suspect_queues):
            queue = self._suspect_queues[tenant]
            while queue and queue[0].future.done():
                queue.popleft()  # its caller gave up waiting
            if not queue:
                del self._suspect_queues[tenant]
            elif not self._is_suspect(tenant):
                del self._suspect_queues[tenant]
                self._queues.setdefault(tenant, deque()).extendleft(reversed(queue))
            elif (
                tenant not in self._suspect_running
                and len(self._suspect_running) < self._suspect_slots
            ):
                # round-robin: this tenant goes last among the suspects
                self._suspect_queues[tenant] = self._suspect_queues.pop(tenant)
                return tenant
        return None

    def _take_round_robin(self) -> list[_Job]:
        """Up to ``batch_size`` jobs, one from each tenant in turn."""
        batch: list[_Job] = []
        size = 0
        while self._queues and len(batch) < self.batch_size and size < MAX_BATCH_BYTES:
            for tenant in list(self._queues):
                queue = self._queues.pop(tenant)
                while queue and queue[0].future.done():
                    queue.popleft()  # its caller gave up waiting
                if not queue:
                    continue
                job = queue.popleft()
                batch.append(job)
                size += len(job.text or b"")
                if queue:
                    self._queues[tenant] = queue  # at the end: the next turn starts after it
                if len(batch) >= self.batch_size or size >= MAX_BATCH_BYTES:
                    break
        return batch

    def _requeue(self, jobs: list[_Job], *, counted: bool, alone: bool = False) -> None:
        """Run these again first: deferred by their process, or their process died
        (``counted`` when nobody could be blamed: a job is run again at most
        ``MAX_REQUEUES`` times). ``alone``: each in a batch of its own."""
        for job in reversed(jobs):
            if job.future.done():
                continue
            if counted:
                job.requeued += 1
                if job.requeued > MAX_REQUEUES:
                    why = "the transformation processes keep dying"
                    job.future.set_exception(TransformUnavailable(why))
                    continue
            if self._is_suspect(job.tenant):
                self._queue_for(job.tenant).appendleft(job)
            elif alone:
                self._solo.appendleft(job)
            else:
                self._queue_for(job.tenant).appendleft(job)
        self._wake.set()

    def _suspect(self, tenant: str) -> None:
        """``tenant`` runs apart from now on, its jobs waiting included."""
        self._suspects.put(tenant, time.monotonic() + SUSPECT_SECONDS)
        waiting = self._queues.pop(tenant, None)
        if waiting:
            self._suspect_queues.setdefault(tenant, deque()).extend(waiting)

    # --- one process ------------------------------------------------------------------

    async def _serve(self, slot: _Slot) -> None:
        """Feed one process batch after batch (supervised: a crash here is restarted)."""
        if not slot.alive:
            await self._spawn(slot)  # every process starts at once, before work arrives
        while True:
            batch, suspect = await self._take()
            slot.batch = batch
            try:
                replies = await self._exchange(slot, batch)
            except _Lost as lost:
                self._blame(batch, lost)  # before anything that may be cancelled
                slot.batch = None
                await slot.stop()
                continue
            except BaseException:
                self._requeue(batch, counted=False)
                slot.batch = None
                raise
            finally:
                if suspect is not None:
                    self._suspect_running.discard(suspect)
            slot.batch = None
            deferred = []
            for job, reply in zip(batch, replies, strict=True):
                result = reply[0]
                if result[0] == "deferred":
                    deferred.append(job)
                    continue
                if result[0] == "failed" and result[1] in ("timeout", "memory"):
                    self._suspect(job.tenant)
                if not job.future.done():
                    job.future.set_result(reply)
            if deferred:
                self._requeue(deferred, counted=False)

    def _blame(self, batch: list[_Job], lost: _Lost) -> None:
        """The job the process was on when it died fails; the others run again."""
        if not 0 <= lost.progress < len(batch):  # it died between jobs (killed, say)
            log.warning("transform_process_lost", status=lost.returncode, job=None)
            self._requeue(batch, counted=True, alone=len(batch) > 1)
            return
        culprit = batch[lost.progress]
        self._suspect(culprit.tenant)
        if lost.timed_out or lost.returncode == -signal.SIGALRM:
            ms = f"{self.hard_deadline * 1000:g} ms"
            message = (
                f"the script ran past the hard deadline ({ms}) and its sandbox was stopped "
                "(an operation the time limit cannot interrupt, such as a backtracking "
                "regular expression)"
            )
            failed = ["failed", "timeout", message, None]
        else:
            message = f"the sandbox process died running the script (status {lost.returncode})"
            failed = ["failed", "error", message, None]
        log.warning(
            "transform_process_lost", status=lost.returncode, job=lost.progress, blamed=failed[1]
        )
        if not culprit.future.done():
            culprit.future.set_result((failed, None))
        # the others did nothing wrong: each runs again alone (the culprit's tenant's
        # in the suspect lane), not counted against them
        self._requeue([job for job in batch if job is not culprit], counted=False, alone=True)

    async def _exchange(self, slot: _Slot, batch: list[_Job]) -> list[_Reply]:
        if not slot.alive:
            await self._spawn(slot)
        process = slot.process
        assert process is not None and process.stdin is not None and process.stdout is not None
        scripts = {job.key: job.script for job in batch}
        jobs = [
            [job.key, job.tenant, -1 if job.text is None else len(job.text), job.keep]
            for job in batch
        ]
        frame = _worker.encode_frame(
            {"scripts": scripts, "jobs": jobs}, [job.text for job in batch if job.text]
        )
        # each job has two phases at most (compile, run), each ended at the hard deadline
        # by the process itself: this is the backstop for a process that cannot be
        # trusted to (stopped, or stuck where even SIGALRM waits)
        backstop = 2.0 + 2 * self.hard_deadline * len(batch)
        try:
            async with asyncio.timeout(backstop):
                process.stdin.write(frame)
                await process.stdin.drain()
                header, blob = await _read_frame(
                    process.stdout,
                    max_header=MAX_HEADER_PER_JOB * (len(batch) + 1),
                    max_blob=(self.max_output + _worker.MAX_REST_BYTES) * len(batch),
                )
        except TimeoutError:
            progress = slot.progress()
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise _Lost(progress, process.returncode, timed_out=True) from None
        except (asyncio.IncompleteReadError, ConnectionError):
            await process.wait()
            raise _Lost(slot.progress(), process.returncode, timed_out=False) from None
        except _Oversized as exc:  # a process that breaks the protocol is not trusted
            log.warning("transform_process_oversized_reply", error=str(exc))
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise _Lost(-1, process.returncode, timed_out=False) from None
        replies: list[_Reply] = []
        offset = 0
        for result in header["results"]:
            if result[0] == "ok":
                _, cancel, url, rest_size, body_size = result
                rest = blob[offset : offset + rest_size].decode()
                offset += rest_size
                body = blob[offset : offset + body_size].decode()
                offset += body_size
                outcome = Cancelled(rest, body) if cancel else Transformed(url, body, rest)
                replies.append((result, outcome))
            else:
                replies.append((result, None))
        return replies

    async def _spawn(self, slot: _Slot) -> None:
        await slot.stop()
        slot.open_page()
        assert slot.page is not None
        _worker.PROGRESS.pack_into(slot.page, 0, -1)
        process = await asyncio.create_subprocess_exec(
            self.python,
            # isolated: no PYTHON* variables, no user site, not the script's folder on
            # sys.path (nothing there may shadow a module)
            "-I",
            str(_WORKER_SCRIPT),
            repr(self.time_limit),
            str(self.memory_limit),
            str(self.cache_size),
            repr(self.hard_deadline),
            str(slot.page_fd),
            str(self.process_memory),
            str(self.max_output),
            str(self.address_space),
            env=_child_environment(),  # none of the server's secrets
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            pass_fds=(slot.page_fd,),
            start_new_session=True,  # a terminal's Ctrl-C is for the parent to handle
        )
        slot.process = process
        assert process.stdout is not None
        try:
            async with asyncio.timeout(START_TIMEOUT):
                hello, _ = await _read_frame(process.stdout)
        except (TimeoutError, asyncio.IncompleteReadError) as exc:
            await slot.stop()
            raise _StartFailed(f"a transform process did not start ({exc!r})") from exc
        if not hello.get("ready"):
            await slot.stop()
            raise _StartFailed(f"a transform process could not start: {hello.get('error')}")
        log.debug("transform_process_started", pid=process.pid, slot=slot.index)


class _Oversized(Exception):
    """A pool process announced a reply larger than its batch can make."""


MAX_HEADER_PER_JOB = 64 * 1024
"""Bytes of reply header a job may take (a cut error message, or a url, JSON-escaped)."""


def _child_environment() -> dict[str, str]:
    """The few variables a pool process needs: not the server's (its database URL, its
    encryption keys)."""
    keep = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "SYSTEMROOT")
    return {name: os.environ[name] for name in keep if name in os.environ}


async def _read_frame(
    stream: asyncio.StreamReader, max_header: int = 1 << 20, max_blob: int = 1 << 30
) -> tuple[dict[str, Any], bytes]:
    """The next frame; :class:`_Oversized` before reading one larger than allowed."""
    head_size, blob_size = _worker.FRAME.unpack(await stream.readexactly(_worker.FRAME.size))
    if head_size > max_header or blob_size > max_blob:
        raise _Oversized(f"a reply of {head_size} + {blob_size} bytes")
    header = json.loads(await stream.readexactly(head_size))
    blob = await stream.readexactly(blob_size) if blob_size else b""
    return header, blob


def _failed(result: list[Any]) -> TransformFailed:
    _, kind, message, line = result
    return TransformFailed(kind, message, line)
