"""A probe for tidings' processes in a benchmark: how often, and how long, Python's
garbage collector stopped each one.

Run: ``BENCH_PYTHONPATH=bench/probes/gc_pauses GC_PAUSES_DIR=/tmp/gc .venv/bin/python
bench/benchmark.py ...`` (``bench/harness.py`` puts ``BENCH_PYTHONPATH`` on the path of
the processes it starts, so Python imports this file as their ``sitecustomize``). From
``GC_PAUSES_FROM`` seconds after start (default 6: startup's collections left out), each
process rewrites ``<GC_PAUSES_DIR>/<pid>.txt`` every 2 s: its command line, collections
per generation, their total and longest time, and the objects collections walk and the
ones frozen (``tidings.collector``). Only for processes started with ``GC_PAUSES_DIR``.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

_FOLDER = os.environ.get("GC_PAUSES_DIR")


class _Pauses:
    def __init__(self) -> None:
        self.counting = False
        self.began = 0.0
        self.count = [0, 0, 0]
        self.total = [0.0, 0.0, 0.0]
        self.longest = [0.0, 0.0, 0.0]

    def note(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.began = time.perf_counter()
            return
        if not self.counting:
            return
        took, generation = time.perf_counter() - self.began, info["generation"]
        self.count[generation] += 1
        self.total[generation] += took
        self.longest[generation] = max(self.longest[generation], took)

    def line(self) -> str:
        ms = [round(t * 1000, 1) for t in self.total]
        longest = [round(t * 1000, 1) for t in self.longest]
        return (
            f"{' '.join(sys.argv[-4:])}: collections {self.count}, total ms {ms}, "
            f"longest ms {longest}, walked {len(gc.get_objects())}, "
            f"frozen {gc.get_freeze_count()}\n"
        )


def _report(pauses: _Pauses, folder: Path) -> None:
    time.sleep(float(os.environ.get("GC_PAUSES_FROM", "6")))
    pauses.counting = True
    while True:
        time.sleep(2)
        (folder / f"{os.getpid()}.txt").write_text(pauses.line())


if _FOLDER:
    _pauses = _Pauses()
    gc.callbacks.append(_pauses.note)
    Path(_FOLDER).mkdir(parents=True, exist_ok=True)
    threading.Thread(target=_report, args=(_pauses, Path(_FOLDER)), daemon=True).start()
