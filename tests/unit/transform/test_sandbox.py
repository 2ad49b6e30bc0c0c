"""The pool process's half, in this process: QuickJS's error text read for a message and a
line, the compiled-script cache, and the frame protocol."""

from __future__ import annotations

import io
import json

import pytest

from tidings.transform import _worker
from tidings.transform._worker import Sandbox, describe, encode_frame, read_frame

LIMIT = 32 * 1024 * 1024


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        (
            "Error: boom\n    at f (<input>:3)\n    at handler (<input>:7)\n"
            "    at __tidings_run (<input>:6)\n",
            "Error: boom",
            3,
        ),
        ("SyntaxError: expecting ';'\n    at <input>:4\n", "SyntaxError: expecting ';'", 4),
        (
            "SyntaxError: expecting property name\n    at <input>:1\n    at parse (native)\n"
            "    at handler (<input>:3)\n    at __tidings_run (<input>)\n",
            "SyntaxError: expecting property name",
            3,
        ),
        (
            "InternalError: interrupted\n    at __tidings_run (<input>:6)\n",
            "InternalError: interrupted",
            None,
        ),
        ("oops\nundefined", "oops", None),
        ("", "", None),
    ],
)
def test_describe_finds_the_scripts_line(text: str, message: str, line: int | None) -> None:
    assert describe(text) == (message, line)


@pytest.fixture
def sandbox() -> Sandbox:
    return Sandbox(0.05, LIMIT, cache_size=2)


WEBHOOK = '{"method":"POST","url":"https://x.example/","payload":{},"cancel":false}'


def run(
    sandbox: Sandbox, key: str, script: str, text: str = WEBHOOK
) -> tuple[list[object], str | None]:
    """The result and the body (the returned payload as JSON text), if any."""
    result, blobs = sandbox.run(key, script, text)
    return result, blobs[1].decode() if len(blobs) == 2 else None


COUNTER = "let n = 0;\nfunction handler(w) { w.payload.n = ++n; return w }"


def test_a_run_answers_the_body_and_the_rest_of_the_webhook(sandbox: Sandbox) -> None:
    text = '{"url":"https://x.example/","payload":{"a":"é","x":1e21,"y":1.5e-7}}'
    result, blobs = sandbox.run("k", COUNTER, text)
    body = '{"a":"é","x":1e+21,"y":1.5e-7,"n":1}'  # as JSON.stringify printed it
    assert result == ["ok", False, "https://x.example/", 28, len(body.encode())]
    assert blobs == [b'{"url":"https://x.example/"}', body.encode()]


def test_the_least_recently_used_script_is_forgotten(sandbox: Sandbox) -> None:
    assert json.loads(run(sandbox, "a", COUNTER)[1] or "")["n"] == 1
    assert json.loads(run(sandbox, "a", COUNTER)[1] or "")["n"] == 2
    run(sandbox, "b", COUNTER)
    run(sandbox, "a", COUNTER)  # a is the most recent again: c evicts b
    run(sandbox, "c", COUNTER)
    assert json.loads(run(sandbox, "a", COUNTER)[1] or "")["n"] == 4
    assert json.loads(run(sandbox, "b", COUNTER)[1] or "")["n"] == 1  # compiled afresh


def test_a_compile_error_is_kept_but_a_compile_timeout_is_not(sandbox: Sandbox) -> None:
    broken = run(sandbox, "broken", "function handler(w) {")[0]
    assert broken[:2] == ["failed", "error"]
    assert "broken" in sandbox._compiled
    slow = run(sandbox, "slow", "while (true) {}")[0]
    assert slow[:2] == ["failed", "timeout"]
    assert "slow" not in sandbox._compiled


def test_a_context_out_of_time_memory_or_stack_is_thrown_away(sandbox: Sandbox) -> None:
    scripts = {
        "loop": "function handler(w) { for (;;) {} }",
        "hoard": "function handler(w) { const a = []; for (;;) a.push(new Array(1e5).fill(1.5)) }",
        "deep": "function f() { return f() + 1 }\nfunction handler(w) { return f() }",
    }
    for key, script in scripts.items():
        result = run(sandbox, key, script)[0]
        assert result[0] == "failed", result
        assert key not in sandbox._compiled
    thrown = run(sandbox, "throws", "function handler(w) { throw new Error('x') }")[0]
    assert thrown[1:3] == ["error", "Error: x"]
    assert "throws" in sandbox._compiled  # an ordinary throw leaves a usable context


def test_a_context_that_hoards_memory_is_started_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_worker, "CHECK_EVERY", 2)
    sandbox = Sandbox(0.05, 4 * 1024 * 1024, cache_size=4)
    hoard = "const kept = [];\nfunction handler(w) { kept.push('x'.repeat(1500000)); return w }"
    run(sandbox, "h", hoard)
    assert "h" in sandbox._compiled
    run(sandbox, "h", hoard)  # now over half of 4 MiB, and it is the second run: looked at
    assert "h" not in sandbox._compiled


def test_a_check_compiles_in_a_context_that_is_not_kept(sandbox: Sandbox) -> None:
    assert sandbox.check("function handler(w) { return w }") == ["checked"]
    assert sandbox._compiled == {}
    assert sandbox.check("function nope() {}")[1:3] == [
        "error",
        "the script must define function handler(webhook)",
    ]


def test_a_batch_goes_through_frames_both_ways(sandbox: Sandbox) -> None:
    texts = [b'{"url":"u","payload":[1]}', b'{"url":"u","payload":[2]}']
    script = "function handler(w) { w.payload[0] *= 10; return w }"
    jobs = [["k", "t", len(t), True] for t in texts] + [["k", "t", -1, False]]
    header = {"scripts": {"k": script}, "jobs": jobs}
    stream = io.BytesIO(encode_frame(header, texts))
    frame = read_frame(stream)
    assert frame is not None
    steps: list[int] = []
    results, outputs = sandbox.batch(*frame, steps.append)
    assert steps == [0, 1, 2]
    assert results == [["ok", False, "u", 11, 4], ["ok", False, "u", 11, 4], ["checked"]]
    assert outputs == [b'{"url":"u"}', b"[10]", b'{"url":"u"}', b"[20]"]
    assert read_frame(stream) is None  # the end of the input
    assert read_frame(io.BytesIO(encode_frame(header, texts)[:-3])) is None  # cut short
