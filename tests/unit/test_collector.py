"""``tidings.collector``: the garbage collector of a server process, once started. Each
test runs in an interpreter of its own: ``settle`` changes the whole process's collector,
and in this one it would also walk everything the test session holds."""

from __future__ import annotations

import json
import subprocess
import sys

from tidings import collector

SETTLED = """
import gc, json
from tidings import collector
gc.set_threshold({threshold})
made_at_startup = [{{"n": n}} for n in range(100)]
collector.settle()
walked = {{id(o) for o in gc.get_objects()}}
print(json.dumps({{
    "frozen": gc.get_freeze_count(),
    "walked": [id(made_at_startup) in walked, id(made_at_startup[0]) in walked],
    "threshold": gc.get_threshold(),
}}))
"""


def settled(threshold: tuple[int, int, int]) -> dict[str, object]:
    code = SETTLED.format(threshold=", ".join(map(str, threshold)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(out.stdout.splitlines()[-1])
    return result


def test_settle_freezes_what_startup_made_and_collects_the_young_less_often() -> None:
    found = settled((700, 10, 10))
    assert isinstance(found["frozen"], int) and found["frozen"] > 100
    assert found["walked"] == [False, False]  # no collection looks at them again
    assert found["threshold"] == [collector.YOUNG_THRESHOLD, 10, 10]


def test_settle_keeps_a_young_threshold_set_higher_already() -> None:
    assert settled((50_000, 20, 30))["threshold"] == [50_000, 20, 30]
