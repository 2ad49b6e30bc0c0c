"""One sandbox process of the transformation pool: QuickJS, fed batches over a pipe.

The parent (:mod:`tidings.transform.engine`) starts this file as a script
(``python -I _worker.py ...``) and speaks the frame protocol below on the child's
standard input and output. It imports only the standard library (and QuickJS, inside
:class:`Sandbox`), so the engine module can import the protocol half of it without
loading QuickJS, and the child starts without importing tidings.

Why a process: QuickJS holds the GIL while a script runs, and some operations are not
interrupted by its time limit at all (a backtracking regular expression such as
``/(a+)+$/`` on a long subject runs for hours). Here that stalls only this process:
before each compile and each run the process arms ``ITIMER_REAL``; if a job outlives
its hard deadline, SIGALRM's default action ends the process (no Python handler could
run while QuickJS is inside C code). It also writes the index of the job it is on into a
shared page first, so the parent knows which job to blame and which to run again.

Isolation: one QuickJS runtime and context per (tenant, script) key, each with its own
memory limit; a tenant's globals and prototypes live only in its own context. A context
that ran out of time, memory or stack is thrown away (its state may be half-changed).

Frames, both ways: ``>II`` (header length, blob length), a JSON header, then the blob.
Request header: ``{"scripts": {key: source}, "jobs": [[key, length], ...]}``; each job's
input is the next ``length`` bytes of the blob (the webhook as JSON text), or ``-1`` to
only compile (a check, in a context that is not kept). Reply header: ``{"results": [...]}``
with ``["ok", length]`` (the returned webhook's JSON text, from the blob), ``["checked"]``
or ``["failed", kind, message, line]``. The first frame the child writes is its hello:
``{"ready": true}`` or ``{"ready": false, "error": "..."}``.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import signal
import struct
import sys
from collections import OrderedDict
from collections.abc import Callable
from typing import IO, Any

FRAME = struct.Struct(">II")
PROGRESS = struct.Struct("<q")
"""The index of the job the child is on (in the shared page), -1 between batches."""
MAX_MESSAGE = 500
"""Characters of an error message kept (a script may throw a megabyte of text)."""
MAX_OUTPUT_CHARS = 4 * 1024 * 1024
"""The largest webhook (as JSON text) a handler may return."""
CHECK_EVERY = 64
"""Runs of a context between looks at its memory (a look costs as much as a run)."""

PRELUDE = r"""
(function () {
  const parse = JSON.parse, stringify = JSON.stringify, isArray = Array.isArray;
  const PromiseType = Promise, InternalErrorType = InternalError;
  return function __tidings_run(text) {
    const out = handler(parse(text));
    if (out instanceof PromiseType) return "!promise";
    if (out === null) return "!null";
    if (isArray(out)) return "!array";
    if (typeof out !== "object") return "!" + typeof out;
    try {
      return stringify(out);
    } catch (e) {
      if (e instanceof InternalErrorType) throw e;
      return "!json:" + String(e);
    }
  };
})()
"""
"""Evaluated before the tenant's script, so it holds JSON and the types it checks as they
were; ``handler`` is looked up when called, so ``function``, ``const`` and ``var``
declarations all work. It answers JSON text, or ``!`` and what was wrong."""

_RETURNED = {
    "!promise": "handler returned a Promise: it must return the webhook object itself "
    "(async handlers are not supported; there is no I/O to wait for)",
    "!null": "handler returned null: it must return the webhook object",
    "!array": "handler returned an array: it must return the webhook object",
}

_PAREN_LINE = re.compile(r"\(<input>:(\d+)\)")
_BARE_LINE = re.compile(r"^\s*at <input>:(\d+)\s*$")


def failure(kind: str, message: str, line: int | None = None) -> list[Any]:
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    return ["failed", kind, message, line]


def describe(error_text: str) -> tuple[str, int | None]:
    """QuickJS's exception text (``"TypeError: …\\n    at handler (<input>:3)\\n…"``) as
    the message and the script's line: the innermost frame in the script (the prelude's
    frames carry no line), or the position of a syntax error in it."""
    first, _, stack = error_text.partition("\n")
    frames = [frame for frame in stack.splitlines() if frame.strip() and frame != "undefined"]
    for frame in frames:
        if "__tidings_run" in frame:
            continue  # the prelude's
        found = _PAREN_LINE.search(frame)
        if found:
            return first, int(found.group(1))
    if len(frames) == 1:  # a syntax error: "    at <input>:4"
        bare = _BARE_LINE.match(frames[0])
        if bare:
            return first, int(bare.group(1))
    return first, None


def classify(error_text: str, time_limit: float, memory_limit: int) -> list[Any]:
    """A failure from QuickJS's exception text: out of time, out of memory, or an error."""
    message, line = describe(error_text)
    if message.startswith("InternalError: interrupted"):
        limit = f"{time_limit * 1000:g} ms"
        return failure("timeout", f"the script ran past its time limit ({limit})", line)
    if message.startswith("InternalError: out of memory"):
        limit = f"{memory_limit / 1024 / 1024:g} MiB"
        return failure("memory", f"the script ran out of memory (limit {limit})", line)
    return failure("error", message, line)


class _Compiled:
    __slots__ = ("context", "run", "runs")

    def __init__(self, context: Any, run: Callable[[str], Any]) -> None:
        self.context = context
        self.run = run
        self.runs = 0


class Sandbox:
    """The QuickJS side: compiled scripts by key (least recently used forgotten first),
    each run under the time and memory limits."""

    def __init__(
        self,
        time_limit: float,
        memory_limit: int,
        cache_size: int,
        arm: Callable[[], None] = lambda: None,
    ) -> None:
        import quickjs

        self._quickjs = quickjs
        self.time_limit = time_limit
        self.memory_limit = memory_limit
        self.cache_size = cache_size
        self._arm = arm
        """Restarts the hard deadline (the process's watchdog) before each phase."""
        self._compiled: OrderedDict[str, _Compiled | list[Any]] = OrderedDict()

    def compile(self, source: str) -> _Compiled | list[Any]:
        """A fresh context with the prelude and ``source`` evaluated, or why not."""
        context = self._quickjs.Context()
        context.set_memory_limit(self.memory_limit)
        context.set_time_limit(self.time_limit)
        try:
            run = context.eval(PRELUDE)
            context.eval(source)
            kind = context.eval("typeof handler")
        except self._quickjs.JSException as exc:
            return self._classify(str(exc))
        if kind != "function":
            return failure("error", "the script must define function handler(webhook)")
        return _Compiled(context, run)

    def _classify(self, error_text: str) -> list[Any]:
        return classify(error_text, self.time_limit, self.memory_limit)

    def _get(self, key: str, source: str) -> _Compiled | list[Any]:
        found = self._compiled.get(key)
        if found is not None:
            self._compiled.move_to_end(key)
            return found
        self._arm()
        compiled = self.compile(source)
        if isinstance(compiled, list) and compiled[1] != "error":
            return compiled  # out of time or memory: may pass another time, so not kept
        self._compiled[key] = compiled
        if len(self._compiled) > self.cache_size:
            self._compiled.popitem(last=False)
        return compiled

    def run(self, key: str, source: str, text: str) -> tuple[list[Any], str | None]:
        """One job: the result and, when it succeeded, the returned webhook's JSON text."""
        compiled = self._get(key, source)
        if isinstance(compiled, list):
            return compiled, None
        self._arm()
        try:
            out = compiled.run(text)
        except self._quickjs.JSException as exc:  # StackOverflow is one too
            result = self._classify(str(exc))
            if result[1] != "error" or "stack overflow" in result[2]:
                self._compiled.pop(key, None)  # its state may be half-changed
            return result, None
        compiled.runs += 1
        if compiled.runs % CHECK_EVERY == 0:
            self._forget_if_bloated(key, compiled)
        if not isinstance(out, str):
            return failure("error", "handler did not return the webhook object"), None
        if out.startswith("!"):
            return failure("error", _returned(out)), None
        if len(out) > MAX_OUTPUT_CHARS:
            limit = MAX_OUTPUT_CHARS // (1024 * 1024)
            return failure("error", f"the returned webhook is larger than {limit} MiB"), None
        return ["ok"], out

    def check(self, source: str) -> list[Any]:
        """Compile ``source`` in a context that is not kept: ``["checked"]`` or why not."""
        self._arm()
        compiled = self.compile(source)
        return compiled if isinstance(compiled, list) else ["checked"]

    def _forget_if_bloated(self, key: str, compiled: _Compiled) -> None:
        """A script may keep what it allocates in its globals from run to run; past half
        its limit it would soon fail every run, so start it afresh next time."""
        if compiled.context.memory()["memory_used_size"] > self.memory_limit // 2:
            self._compiled.pop(key, None)

    def batch(
        self, header: dict[str, Any], blob: bytes, progress: Callable[[int], None]
    ) -> tuple[list[list[Any]], list[bytes]]:
        scripts: dict[str, str] = header["scripts"]
        results: list[list[Any]] = []
        outputs: list[bytes] = []
        offset = 0
        for index, (key, length) in enumerate(header["jobs"]):
            progress(index)
            if length < 0:
                results.append(self.check(scripts[key]))
                continue
            text = blob[offset : offset + length].decode()
            offset += length
            result, out = self.run(key, scripts[key], text)
            if out is not None:
                encoded = out.encode()
                result.append(len(encoded))
                outputs.append(encoded)
            results.append(result)
        return results, outputs


def _returned(marker: str) -> str:
    if marker.startswith("!json:"):
        return "the returned webhook is not JSON: " + marker[len("!json:") :]
    known = _RETURNED.get(marker)
    if known is not None:
        return known
    return f"handler returned {marker[1:]}: it must return the webhook object"


# The frame protocol (both ends use these)


def encode_frame(header: dict[str, Any], blobs: list[bytes]) -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode()
    blob = b"".join(blobs)
    return FRAME.pack(len(head), len(blob)) + head + blob


def _read_exactly(stream: IO[bytes], size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = stream.read(size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_frame(stream: IO[bytes]) -> tuple[dict[str, Any], bytes] | None:
    """The next frame, or None at the end of the input (the parent closed the pipe)."""
    prefix = _read_exactly(stream, FRAME.size)
    if prefix is None:
        return None
    head_size, blob_size = FRAME.unpack(prefix)
    head = _read_exactly(stream, head_size)
    blob = _read_exactly(stream, blob_size) if blob_size else b""
    if head is None or blob is None:
        return None
    header: dict[str, Any] = json.loads(head)
    return header, blob


def main(argv: list[str]) -> int:
    time_limit, memory_limit, cache_size, deadline, progress_fd = argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when this ends
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever else writes to standard output cannot break a frame
    source = sys.stdin.buffer
    page = mmap.mmap(int(progress_fd), PROGRESS.size)
    hard_deadline = float(deadline)

    def arm() -> None:
        signal.setitimer(signal.ITIMER_REAL, hard_deadline)

    def progress(index: int) -> None:
        PROGRESS.pack_into(page, 0, index)

    try:
        sandbox = Sandbox(float(time_limit), int(memory_limit), int(cache_size), arm)
    except ImportError as exc:
        out.write(encode_frame({"ready": False, "error": str(exc)}, []))
        out.flush()
        return 1
    out.write(encode_frame({"ready": True}, []))
    out.flush()
    while (frame := read_frame(source)) is not None:
        header, blob = frame
        results, outputs = sandbox.batch(header, blob, progress)
        signal.setitimer(signal.ITIMER_REAL, 0)
        progress(-1)
        out.write(encode_frame({"results": results}, outputs))
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
