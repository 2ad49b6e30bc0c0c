"""Several dispatcher processes under one command: ``tidings worker --processes N``.

One Python process uses one core for its own work. Dispatchers already share the work
through the database (claims skip what another holds; limits hold cluster-wide), so more
cores means more processes. This parent starts the children, restarts one that exits
(with a growing pause, so a child that cannot start does not spin), and passes SIGTERM
and SIGINT on to all of them: each finishes what it has in flight, as a single worker does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

import structlog

log = structlog.get_logger()

FIRST_PAUSE = 1.0
MAX_PAUSE = 30.0
USAGE_ERROR = 2
"""What ``tidings worker`` exits with on invalid settings: restarting cannot help."""
STEADY_AFTER = 60.0
"""A child that ran this long before it exited is restarted after ``FIRST_PAUSE`` again."""


@dataclass
class _Slot:
    number: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    pause: float = FIRST_PAUSE


@dataclass
class ProcessGroup:
    """``count`` copies of ``argv``, kept running until a stop signal."""

    argv: Sequence[str]
    count: int
    stopping: bool = False
    slots: list[_Slot] = field(default_factory=list)

    def run(self) -> int:
        """Run until SIGTERM or SIGINT; returns 0 once every child has exited."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self.slots = [_Slot(n) for n in range(self.count)]
        for each in self.slots:
            self._start(each)
        code = 0
        while any(each.process is not None for each in self.slots):
            pid, status = os.wait()
            slot = self._slot_of(pid)
            if slot is None or slot.process is None:
                continue
            slot.process.returncode = os.waitstatus_to_exitcode(status)
            exited, slot.process = slot.process, None
            if self.stopping:
                continue
            if exited.returncode == USAGE_ERROR:  # the same settings will fail again
                log.error("worker_process_misconfigured", process=slot.number)
                code = USAGE_ERROR
                self._on_signal(signal.SIGTERM, None)
                continue
            self._restart(slot, exited.returncode)
        return code

    def _start(self, slot: _Slot) -> None:
        slot.process = subprocess.Popen(list(self.argv))
        slot.started = time.monotonic()
        log.info("worker_process_started", process=slot.number, pid=slot.process.pid)

    def _restart(self, slot: _Slot, code: int) -> None:
        ran = time.monotonic() - slot.started
        if ran >= STEADY_AFTER:
            slot.pause = FIRST_PAUSE
        log.error("worker_process_exited", process=slot.number, code=code, restart_in=slot.pause)
        resume = time.monotonic() + slot.pause
        while not self.stopping and time.monotonic() < resume:
            time.sleep(0.1)  # a stop signal must not wait out the whole pause
        slot.pause = min(MAX_PAUSE, slot.pause * 2)
        if not self.stopping:
            self._start(slot)

    def _slot_of(self, pid: int) -> _Slot | None:
        for slot in self.slots:
            if slot.process is not None and slot.process.pid == pid:
                return slot
        return None

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True
        for slot in self.slots:
            if slot.process is not None:
                slot.process.send_signal(signum)


def worker_argv() -> list[str]:
    """The command for one child: this interpreter running ``tidings worker``."""
    return [sys.executable, "-m", "tidings.cli", "worker"]
