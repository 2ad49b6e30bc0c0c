"""``tidings serve``: which process dispatches."""

from __future__ import annotations

import pytest

from tidings.cli import dispatches_itself
from tidings.config import Settings


@pytest.mark.parametrize(
    ("enabled", "workers", "dispatches"),
    [(True, 0, True), (True, 1, False), (True, 4, False), (False, 0, False), (False, 2, False)],
)
def test_serve_dispatches_in_its_own_process_only_without_workers_beside_it(
    enabled: bool, workers: int, dispatches: bool
) -> None:
    settings = Settings(dispatcher_enabled=enabled)
    assert dispatches_itself(settings, workers) is dispatches
