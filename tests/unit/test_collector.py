"""``tidings.collector``: the garbage collector of a server process, once started."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from tidings import collector


@pytest.fixture
def restored() -> Iterator[None]:
    """``settle`` changes the whole process: the test session gets its collector back."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored")
def test_settle_freezes_what_startup_made_and_collects_the_young_less_often() -> None:
    made_at_startup = [{"n": n} for n in range(100)]
    gc.set_threshold(700, 10, 10)
    collector.settle()
    assert gc.get_freeze_count() >= len(made_at_startup)
    walked = {id(o) for o in gc.get_objects()}  # what collections still look at
    assert id(made_at_startup) not in walked and id(made_at_startup[0]) not in walked
    assert gc.get_threshold() == (collector.YOUNG_THRESHOLD, 10, 10)


@pytest.mark.usefixtures("restored")
def test_settle_keeps_a_young_threshold_set_higher_already() -> None:
    gc.set_threshold(50_000, 20, 30)
    collector.settle()
    assert gc.get_threshold() == (50_000, 20, 30)
