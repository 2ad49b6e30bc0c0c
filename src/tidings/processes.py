"""Several dispatcher processes under one command: ``tidings worker --processes N``, and
``tidings serve --workers N`` (the API with N dispatchers beside it, none in its own process).

One Python process uses one core for its own work. Dispatchers already share the work
through the database (claims skip what another holds; limits hold cluster-wide), so more
cores means more processes. This parent starts the children, restarts one that exits
(with a growing pause, so a child that cannot start does not spin), and passes SIGTERM
and SIGINT on to all of them: each finishes what it has in flight, as a single worker does.
A child is sent SIGTERM by the kernel if the parent dies, so none outlives the group.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

import structlog

from tidings.supervision import EXIT_USAGE

log = structlog.get_logger()

FIRST_PAUSE = 1.0
MAX_PAUSE = 30.0
POLL_SECONDS = 0.1
PR_SET_PDEATHSIG = 1
PARENT_VARIABLE = "TIDINGS_GROUP_PARENT"
"""Set in a child's environment: the pid of the group's parent, for ``follow_parent``."""
STEADY_AFTER = 60.0
"""A child that ran this long before it exited is restarted after ``FIRST_PAUSE`` again."""


@dataclass
class _Slot:
    number: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    pause: float = FIRST_PAUSE
    restart_at: float | None = None


@dataclass
class ProcessGroup:
    """``count`` copies of ``argv``, kept running until a stop signal."""

    argv: Sequence[str]
    count: int
    stopping: bool = False
    code: int = 0
    slots: list[_Slot] = field(default_factory=list)

    def run(self) -> int:
        """Run until SIGTERM or SIGINT has stopped every child; returns the exit code."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self._supervise()
        return self.code

    def run_beside(self, on_failure: Callable[[], None]) -> Callable[[], int]:
        """Run the group on a thread of its own, beside this process's work (``serve``);
        returns the call that waits, after ``stop_children``, for every child to be gone.
        ``on_failure`` is called if the group ends by itself (misconfigured children, a
        bug): the process should not go on without its workers.

        The thread that starts the children lives until they are gone: the kernel's
        parent-death signal follows the thread that forked, not the process."""

        def supervise() -> None:
            try:
                self._supervise()
            except Exception:  # its children get the parent-death signal as it ends
                log.exception("worker_group_failed")
                self.code = self.code or 1
            if self.code:
                on_failure()

        thread = threading.Thread(target=supervise, name="tidings-workers", daemon=True)
        thread.start()

        def wait() -> int:
            thread.join()
            return self.code

        return wait

    def stop_children(self) -> None:
        """SIGTERM to every child (each finishes what it has in flight); called again while
        they stop, SIGKILL."""
        self._on_signal(signal.SIGKILL if self.stopping else signal.SIGTERM, None)

    def _supervise(self) -> None:
        """Start every child, restart those that exit, until stopped and all are gone."""
        self.slots = [_Slot(n) for n in range(self.count)]
        for slot in self.slots:
            self._start(slot)
        while not (self.stopping and all(slot.process is None for slot in self.slots)):
            self._reap()
            now = time.monotonic()
            for slot in self.slots:
                due = slot.restart_at is not None and slot.restart_at <= now
                if due and not self.stopping:
                    self._start(slot)
            time.sleep(POLL_SECONDS)  # a signal's handler runs in between; nothing to await

    def _start(self, slot: _Slot) -> None:
        slot.restart_at = None
        env = {**os.environ, PARENT_VARIABLE: str(os.getpid())}
        try:
            slot.process = subprocess.Popen(list(self.argv), env=env)
        except OSError as exc:  # out of processes, memory or file descriptors: try later
            log.error("worker_process_not_started", process=slot.number, error=str(exc))
            self._restart_later(slot)
            return
        slot.started = time.monotonic()
        if self.stopping:  # the stop signal came while it was starting: it missed this one
            slot.process.send_signal(signal.SIGTERM)
        log.info("worker_process_started", process=slot.number, pid=slot.process.pid)

    def _reap(self) -> None:
        """Note every child that has exited, and when to start it again. Each child is
        asked on its own: ``serve`` has other children (the transformation engine's)."""
        for slot in self.slots:
            if slot.process is None or (code := slot.process.poll()) is None:
                continue
            slot.process = None
            if not self.stopping:
                self._exited(slot, code)

    def _exited(self, slot: _Slot, code: int) -> None:
        if code == EXIT_USAGE:  # the same settings will fail again
            log.error("worker_process_misconfigured", process=slot.number)
            self.code = EXIT_USAGE
            self._on_signal(signal.SIGTERM, None)
            return
        if time.monotonic() - slot.started >= STEADY_AFTER:
            slot.pause = FIRST_PAUSE
        log.error("worker_process_exited", process=slot.number, code=code, restart_in=slot.pause)
        self._restart_later(slot)

    def _restart_later(self, slot: _Slot) -> None:
        slot.restart_at = time.monotonic() + slot.pause
        slot.pause = min(MAX_PAUSE, slot.pause * 2)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True
        for slot in self.slots:
            if slot.process is not None and slot.process.returncode is None:
                slot.process.send_signal(signum)


def follow_parent() -> None:
    """In a child of a group, first thing: SIGTERM when the parent dies, even by SIGKILL, so
    a killed group leaves no dispatchers behind (Linux; elsewhere a no-op). Done here rather
    than between fork and exec, which is unsafe in a parent with threads (``serve``); a
    parent that died before this line is noticed by its pid."""
    parent = os.environ.pop(PARENT_VARIABLE, None)
    if parent is None or sys.platform != "linux":
        return
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(parent):
        os.kill(os.getpid(), signal.SIGTERM)


def worker_argv() -> list[str]:
    """The command for one child: this interpreter running ``tidings worker``."""
    return [sys.executable, "-m", "tidings.cli", "worker"]
