"""``tidings.processes``: what a child of a group does on its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tidings.processes import PARENT_VARIABLE

CHILD = "from tidings.processes import follow_parent; follow_parent(); print('running')"


@pytest.mark.parametrize(
    ("parent", "code"), [(os.getpid(), 0), (os.getpid() + 1_000_000, -signal.SIGTERM)]
)
def test_a_child_runs_only_while_the_parent_it_was_given_is_its_parent(
    parent: int, code: int
) -> None:
    """A child started for a parent that died meanwhile (its parent's pid is not the one it
    was given) stops itself rather than run unsupervised."""
    env = {**os.environ, PARENT_VARIABLE: str(parent)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == code, done.stderr
    assert (b"running" in done.stdout) is (code == 0)
