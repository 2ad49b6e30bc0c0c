"""The one place tidings reads the time, so tests can run on a clock they control.

``now_ms`` is wall-clock epoch milliseconds (what is stored: due times, created times);
``monotonic`` is for measuring intervals. The dispatcher takes a ``Clock``; tests pass one
driven by the event loop's (virtual) time.
"""

from __future__ import annotations

import time
from typing import Protocol


def now_ms() -> int:
    return int(time.time() * 1000)


class Clock(Protocol):
    def now_ms(self) -> int: ...
    def monotonic(self) -> float: ...


class SystemClock:
    def now_ms(self) -> int:
        return now_ms()

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK = SystemClock()
