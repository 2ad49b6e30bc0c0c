"""Deliveries per minute by outcome, drawn as a stacked bar chart in inline SVG.

Server-side geometry keeps the portal free of a charting library: the template only
places the rectangles computed here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

MINUTE_MS = 60_000
WIDTH = 600
HEIGHT = 120


@dataclass(frozen=True)
class Bar:
    start_ms: int
    succeeded: int
    failed: int
    x: float
    width: float
    succeeded_y: float
    succeeded_height: float
    failed_y: float
    failed_height: float

    @property
    def label(self) -> str:
        minute = time.strftime("%H:%M", time.gmtime(self.start_ms / 1000))
        return f"{minute} UTC: {self.succeeded} succeeded, {self.failed} failed"


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    peak: int
    succeeded: int
    failed: int
    width: int = WIDTH
    height: int = HEIGHT


def window_start(now_ms: int, minutes: int) -> int:
    """The start of the oldest of the last ``minutes`` minutes (the current one included)."""
    return (now_ms // MINUTE_MS - minutes + 1) * MINUTE_MS


def per_minute(counts: Iterable[tuple[int, str, int]], now_ms: int, minutes: int = 60) -> Chart:
    """Place ``(bucket start, outcome, count)`` rows on the last ``minutes`` minutes.

    Minutes with no attempts get an empty bar, so the time axis is always continuous.
    """
    first = window_start(now_ms, minutes)
    succeeded = [0] * minutes
    failed = [0] * minutes
    for start, outcome, count in counts:
        slot = (start - first) // MINUTE_MS
        if 0 <= slot < minutes:
            if outcome == "succeeded":
                succeeded[slot] += count
            elif outcome == "failed":  # a transformation's cancel is neither
                failed[slot] += count
    peak = max((s + f for s, f in zip(succeeded, failed, strict=True)), default=0)
    scale = HEIGHT / peak if peak else 0.0
    slot_width = WIDTH / minutes
    bars = []
    for slot in range(minutes):
        ok_height = succeeded[slot] * scale
        bad_height = failed[slot] * scale
        bars.append(
            Bar(
                start_ms=first + slot * MINUTE_MS,
                succeeded=succeeded[slot],
                failed=failed[slot],
                x=round(slot * slot_width + 1, 2),
                width=round(slot_width - 2, 2),
                succeeded_y=round(HEIGHT - ok_height, 2),
                succeeded_height=round(ok_height, 2),
                failed_y=round(HEIGHT - ok_height - bad_height, 2),
                failed_height=round(bad_height, 2),
            )
        )
    return Chart(bars, peak, sum(succeeded), sum(failed))
