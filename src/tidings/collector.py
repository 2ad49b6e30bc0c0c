"""Python's garbage collector, set for a long-running server process.

CPython's cycle collector stops the whole process while it runs. Its oldest generation
holds whatever has lived long, which in a server is mostly what startup made: modules,
classes, the app, the ORM's and the validators' tables (140,000-185,000 tracked objects
in ``serve`` and ``worker``). A full collection walks all of it: at 1,000 events/s
(``bench/benchmark.py``) 110-220 ms in each process, every dispatcher and the API
about once a run, each one a stall of every emit and delivery of that process: the p99.
Startup's objects are not garbage, so ``settle`` moves them where no collection looks
again (``gc.freeze``; what is frozen is still freed by reference counting, only a cycle
among frozen objects would be kept): a collection then walks only what the running
server made (3,000-20,000 objects), the longest seen 6 ms.

The youngest generation is collected every ``YOUNG_THRESHOLD`` allocations (net, of
container objects) instead of every 700: most of what a delivery allocates is freed by
reference counting as soon as it is done with, and at 700 young collections ran several
times a claim's batch, moving everything in flight on to the older generations.

Only the processes tidings itself runs (``tidings serve``, ``tidings worker``) are
settled: a program serving ``create_app`` in a process of its own decides for it.
"""

from __future__ import annotations

import gc

import structlog

log = structlog.get_logger("tidings.collector")

YOUNG_THRESHOLD = 10_000


def settle() -> None:
    """Once startup is over: collect what it left, freeze the rest, collect the young
    less often."""
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, YOUNG_THRESHOLD), middle, old)
    log.info("collector_settled", frozen_objects=gc.get_freeze_count())
