"""Keeping the background tasks alive, and knowing when to give up.

A database outage is not a crash: the loops ride it out themselves (``storage.errors.
Outage``). A crash is a bug: the supervisor logs it and starts the task again after a
pause. If it keeps crashing (``MAX_CRASHES`` within ``CRASH_WINDOW``), restarting is
pointless: the supervisor gives up with ``Fatal``, and ``serve`` and ``worker`` exit with
a non-zero status so systemd or Kubernetes restart the process (and someone looks).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger("tidings.supervision")

MAX_CRASHES = 5
CRASH_WINDOW = 60.0
RESTART_DELAY = 1.0
EXIT_FATAL = 70
"""The process's exit status when a task kept crashing (EX_SOFTWARE)."""
EXIT_USAGE = 2
"""The process's exit status on invalid settings: starting it again cannot help."""


class Fatal(Exception):
    """A supervised task kept crashing: the process should exit non-zero."""


@dataclass
class TaskState:
    name: str
    running: bool = False
    crashes: list[float] = field(default_factory=list)
    failed: bool = False


async def supervise(
    state: TaskState,
    run: Callable[[], Awaitable[None]],
    stop: asyncio.Event,
    *,
    max_crashes: int = MAX_CRASHES,
    window: float = CRASH_WINDOW,
    delay: float = RESTART_DELAY,
) -> None:
    """Run ``run()`` until ``stop`` is set, restarting it when it crashes."""
    while not stop.is_set():
        state.running = True
        try:
            await run()
        except Exception:
            log.exception("task_crashed", task=state.name)
        else:
            if stop.is_set():
                return
            log.error("task_ended", task=state.name)
        finally:
            state.running = False
        now = asyncio.get_running_loop().time()
        state.crashes = [t for t in state.crashes if now - t < window] + [now]
        if len(state.crashes) >= max_crashes:
            state.failed = True
            log.critical("task_gave_up", task=state.name, crashes=len(state.crashes))
            raise Fatal(state.name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
