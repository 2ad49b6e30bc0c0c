"""Interop: every body prints exactly as Node's ``JSON.stringify(JSON.parse(body))`` prints it,
so a receiver that verifies a re-serialized body (as the GoHighLevel docs' examples do)
gets the bytes that were signed.

One ``node`` process serves a whole test: it reads one JSON document per line on stdin and
writes each back, re-serialized, one per line (compact JSON holds no raw newline). It
needs ``node`` alone (no npm packages); without it the tests skip, or fail when ``CI`` is
set, as in test_interop_node.py.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.e2e.test_interop_node import _unavailable
from tests.support import strategies
from tests.support.processes import wait_or_kill
from tidings.domain.events import Envelope
from tidings.domain.js_json import MAX_SAFE_INTEGER, js_number

REPRINT = """
const lines = require("readline").createInterface({ input: process.stdin });
lines.on("line", (line) => process.stdout.write(JSON.stringify(JSON.parse(line)) + "\\n"));
"""

Reprint = Callable[[bytes], bytes]


@pytest.fixture(scope="module")
def node_reprint() -> Iterator[Reprint]:
    """``reprint(line)``: what Node's ``JSON.stringify(JSON.parse(line))`` prints."""
    node = shutil.which("node")
    if node is None:
        _unavailable("node is not on PATH: the Node.js JSON interop test needs it")
    proc = subprocess.Popen(
        [node, "-e", REPRINT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stdin, stdout, stderr = proc.stdin, proc.stdout, proc.stderr

    def reprint(line: bytes) -> bytes:
        assert b"\n" not in line
        stdin.write(line + b"\n")
        stdin.flush()
        answer = stdout.readline()
        if not answer.endswith(b"\n"):
            proc.wait(timeout=10)
            raise RuntimeError(f"node exited ({proc.returncode}):\n{stderr.read().decode()}")
        return answer[:-1]

    try:
        yield reprint
    finally:
        stdin.close()
        wait_or_kill(proc, 10)
        stdout.close()
        stderr.close()


keys = strategies.KEYS
json_values = strategies.json_values()


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, json_values), st.dictionaries(keys, json_values, max_size=3))
@example({"total": 100.0, "rate": 1e-7, "fee": 0.00001, "big": 1e16, "huger": 1.5e22}, {})
@example({"b": 1, "10": 2, "2": 3, "4294967294": 4, "4294967295": 5, "01": 6}, {"-0": -0.0})
@example({"text": 'é \u2028\u2029 \x00\x1f\x7f "\\/ \U0001f600'}, {"n": MAX_SAFE_INTEGER})
def test_every_body_is_what_node_reprints(
    node_reprint: Reprint, payload: dict[str, Any], metadata: dict[str, Any]
) -> None:
    body = Envelope.new("client.created", "acme", payload, metadata).to_json().encode()
    assert node_reprint(body) == body


@settings(max_examples=500, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
@example(1e21)
@example(1e-7)
@example(123456789012345680000.0)
@example(5e-324)
def test_every_number_is_what_node_prints(node_reprint: Reprint, value: float) -> None:
    # Python's repr is a JSON number too (100.0, 1e-07, 1e+16); Node prints its own form
    assert node_reprint(repr(value).encode()).decode() == js_number(value)
