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

The judging happens here too, not in the server: what a handler returned is checked
(its shape, nesting depth, node count, size in bytes, well-formed Unicode) and the exact
body to send (the returned ``payload`` as ``JSON.stringify`` printed it) is cut out of
the printed text, so a script's output costs the server no CPU beyond copying bytes.

Memory: every cached context's heap is measured after its compile and from time to time
after runs; past ``process_memory`` in all, the least recently used are forgotten. The
process's address space is capped (``RLIMIT_AS``) as a backstop.

Frames, both ways: ``>II`` (header length, blob length), a JSON header, then the blob.
Request header: ``{"scripts": {key: source}, "jobs": [[key, tenant, length, keep], ...]}``;
each job's input is the next ``length`` bytes of the blob (the webhook as JSON text), or
``-1`` to only compile (a check, in a context that is not kept); ``keep`` false forgets
the context after the run (dry runs). Reply header: ``{"results": [...]}`` with
``["ok", cancel, url, rest_length, body_length]`` (from the blob: the returned webhook
without its payload, as JSON text, then the body), ``["checked"]``,
``["failed", kind, message, line]`` or ``["deferred"]`` (not run: the batch ran past its
time budget, or an earlier job of the same tenant ran out of time or memory; the parent
queues it again). The first frame the child writes is its hello: ``{"ready": true}`` or
``{"ready": false, "error": "..."}``.
"""

from __future__ import annotations

import json
import json.scanner
import mmap
import os
import re
import resource
import signal
import struct
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import IO, Any

FRAME = struct.Struct(">II")
PROGRESS = struct.Struct("<q")
"""The index of the job the child is on (in the shared page), -1 between batches."""
MAX_MESSAGE = 500
"""Characters of an error message kept (a script may throw a megabyte of text)."""
MAX_REST_BYTES = 64 * 1024
"""The largest the returned webhook may be without its payload (url, eventType, ...)."""
MAX_URL_CHARS = 8192
MAX_DEPTH = 64
"""Nesting levels the returned webhook may have (twice the API's ``MAX_JSON_DEPTH``:
the envelope and the webhook around a payload add two)."""
MAX_NODES = 200_000
"""Values (objects, arrays, strings, numbers, ...) the returned webhook may hold."""
SLOW_RUN = 0.001
"""A run longer than this may have grown its context: its memory is measured again."""
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

    context: Any
    run: Callable[[str], Any]
    runs: int

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
        *,
        process_memory: int = 256 * 1024 * 1024,
        max_output: int = 1024 * 1024,
    ) -> None:
        import quickjs

        self._quickjs = quickjs
        self.time_limit = time_limit
        self.memory_limit = memory_limit
        self.cache_size = cache_size
        self._arm = arm
        """Restarts the hard deadline (the process's watchdog) before each phase."""
        self._compiled: OrderedDict[str, _Compiled | list[Any]] = OrderedDict()
        self.process_memory = process_memory
        """Bytes all cached contexts may hold together (least recently used go first)."""
        self.max_output = max_output
        """Bytes the body (the returned payload) may have: the API's request limit."""
        self._sizes: dict[str, int] = {}
        self.held = 0
        """What the cached contexts held when last measured, in bytes."""

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
        if isinstance(compiled, _Compiled):
            self._measure(key, compiled)
        while len(self._compiled) > self.cache_size:
            self._forget(next(iter(self._compiled)))
        return compiled

    def _measure(self, key: str, compiled: _Compiled) -> None:
        """Note what ``key``'s context holds now; forget it if it is bloated (a script
        may keep what it allocates in its globals from run to run: past half its limit
        it would soon fail every run), and the least recently used while all the
        contexts together hold more than ``process_memory``."""
        size = int(compiled.context.memory()["memory_used_size"])
        self.held += size - self._sizes.get(key, 0)
        self._sizes[key] = size
        if size > self.memory_limit // 2:
            self._forget(key)
        while self.held > self.process_memory and self._compiled:
            self._forget(next(iter(self._compiled)))

    def _forget(self, key: str) -> None:
        self._compiled.pop(key, None)
        self.held -= self._sizes.pop(key, 0)

    def cached(self) -> int:
        return len(self._compiled)

    def run(
        self, key: str, source: str, text: str, keep: bool = True
    ) -> tuple[list[Any], list[bytes]]:
        """One job: the result and, when it succeeded, the blobs it names (the returned
        webhook without its payload, then the body). Never raises for what a script does."""
        try:
            compiled = self._get(key, source)
            if isinstance(compiled, list):
                return compiled, []
            return self._run(key, compiled, text)
        except Exception as exc:  # e.g. a string QuickJS cannot hand over (a lone surrogate)
            self._forget(key)
            return failure("error", _unreadable(exc)), []
        finally:
            if not keep:
                self._forget(key)

    def _run(self, key: str, compiled: _Compiled, text: str) -> tuple[list[Any], list[bytes]]:
        self._arm()
        started = time.perf_counter()
        try:
            out = compiled.run(text)
        except self._quickjs.JSException as exc:  # StackOverflow is one too
            result = self._classify(str(exc))
            if result[1] != "error" or "stack overflow" in result[2]:
                self._forget(key)  # its state may be half-changed
            return result, []
        compiled.runs += 1
        if time.perf_counter() - started > SLOW_RUN or compiled.runs % CHECK_EVERY == 0:
            self._measure(key, compiled)
        if not isinstance(out, str):
            return failure("error", "handler did not return the webhook object"), []
        if out.startswith("!"):
            return failure("error", _returned(out)), []
        return judge(out, self.max_output)

    def check(self, source: str) -> list[Any]:
        """Compile ``source`` in a context that is not kept: ``["checked"]`` or why not."""
        self._arm()
        try:
            compiled = self.compile(source)
        except Exception as exc:
            return failure("error", _unreadable(exc))
        return compiled if isinstance(compiled, list) else ["checked"]

    def batch(
        self,
        header: dict[str, Any],
        blob: bytes,
        progress: Callable[[int], None],
        budget: float = float("inf"),
    ) -> tuple[list[list[Any]], list[bytes]]:
        """Run a batch's jobs in order; past ``budget`` seconds, and after a tenant's job
        ran out of time or memory for that tenant's, the rest are deferred (not run)."""
        scripts: dict[str, str] = header["scripts"]
        results: list[list[Any]] = []
        outputs: list[bytes] = []
        offset = 0
        started = time.monotonic()
        misbehaved: set[str] = set()
        for index, (key, tenant, length, keep) in enumerate(header["jobs"]):
            raw = b"" if length < 0 else blob[offset : offset + length]
            offset += max(length, 0)
            if index and (tenant in misbehaved or time.monotonic() - started > budget):
                results.append(["deferred"])
                continue
            progress(index)
            if length < 0:
                result = self.check(scripts[key])
            else:
                result, blobs = self.run(key, scripts[key], raw.decode(), keep)
                outputs.extend(blobs)
            if result[0] == "failed" and result[1] in ("timeout", "memory"):
                misbehaved.add(tenant)
            results.append(result)
        return results, outputs


def _unreadable(exc: BaseException) -> str:
    if isinstance(exc, UnicodeError):
        return (
            "the script produced a string that is not well-formed UTF-16 (a lone "
            "surrogate such as '\\uD800'), which cannot be sent"
        )
    if isinstance(exc, MemoryError):
        return "the sandbox ran out of memory"
    return f"the script's result could not be read ({type(exc).__name__})"


# Judging what a handler returned

_SCAN = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


def _error(message: str) -> tuple[list[Any], list[bytes]]:
    return failure("error", message), []


def _fields(text: str) -> dict[str, tuple[Any, int, int]] | str:
    """The top-level fields of the object ``text`` (printed by ``JSON.stringify``: no
    spaces) with where each value's text starts and ends; or what is wrong."""
    if not text.startswith("{"):
        return "handler must return the webhook object"
    fields: dict[str, tuple[Any, int, int]] = {}
    at = 1
    try:
        while text[at] != "}":
            if text[at] == ",":
                at += 1
            key, at = _SCAN(text, at)
            if not isinstance(key, str) or text[at] != ":":
                raise ValueError
            start = at + 1
            value, at = _SCAN(text, start)
            fields[key] = (value, start, at)
    except RecursionError:
        return f"the returned webhook is nested deeper than {MAX_DEPTH} levels"
    except (StopIteration, IndexError, ValueError):
        return "the returned webhook is not JSON"
    if at != len(text) - 1:
        return "the returned webhook is not JSON"
    return fields


def _shape(value: Any) -> str | None:
    """What makes ``value`` unsendable: too deep, too many values, or a string (or key)
    that is not well-formed UTF-16; None if nothing does."""
    stack: list[tuple[Any, int]] = [(value, 2)]  # a field's value sits at depth 2
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            return f"the returned webhook holds more than {MAX_NODES} values"
        if isinstance(item, str):
            strings: Any = (item,)
        elif isinstance(item, dict):
            strings = item.keys()
        else:
            strings = ()
        for string in strings:
            if not string.isascii():
                try:
                    string.encode()
                except UnicodeEncodeError:
                    return (
                        "the returned webhook holds a string that is not well-formed "
                        "UTF-16 (a lone surrogate such as '\\uD800'), which cannot be sent"
                    )
        if isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                return f"the returned webhook is nested deeper than {MAX_DEPTH} levels"
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return None


def judge(text: str, max_output: int) -> tuple[list[Any], list[bytes]]:
    """The result for the JSON text a handler's returned object was printed as, and its
    blobs: the webhook without its payload (JSON text), then the body to send."""
    if len(text) > max_output + MAX_REST_BYTES:
        return _error(f"the returned webhook is larger than {max_output} bytes")
    fields = _fields(text)
    if isinstance(fields, str):
        return _error(fields)
    for key, (value, _, _) in fields.items():
        problem = _shape({key: value})
        if problem is not None:
            return _error(problem)
    rest = {key: value for key, (value, _, _) in fields.items() if key != "payload"}
    rest_bytes = json.dumps(rest, ensure_ascii=False, separators=(",", ":")).encode()
    if len(rest_bytes) > MAX_REST_BYTES:
        return _error(
            f"the returned webhook without its payload is larger than {MAX_REST_BYTES} bytes"
        )
    cancel = rest.get("cancel", False)
    if cancel is True:  # nothing is sent: the payload is only shown (dry runs)
        shown = text[fields["payload"][1] : fields["payload"][2]] if "payload" in fields else ""
        body = shown.encode()
        if len(body) > max_output:
            return _error(f"the payload is larger than {max_output} bytes")
        return ["ok", True, "", len(rest_bytes), len(body)], [rest_bytes, body]
    if cancel is not False:
        return _error("cancel must be true or false")
    if rest.get("method", METHOD) != METHOD:
        return _error(f"method is read-only: tidings sends every webhook with {METHOD}")
    url = rest.get("url")
    if not isinstance(url, str) or not url:
        return _error("url must be a non-empty string")
    if len(url) > MAX_URL_CHARS:
        return _error(f"url is longer than {MAX_URL_CHARS} characters")
    if "payload" not in fields:
        return _error(
            "the returned webhook has no payload (undefined, a function or a symbol is not JSON)"
        )
    payload, start, end = fields["payload"]
    if not isinstance(payload, dict | list):
        return _error("payload must be a JSON object or array")
    body = text[start:end].encode()
    if len(body) > max_output:
        return _error(f"the payload is larger than {max_output} bytes")
    return ["ok", False, url, len(rest_bytes), len(body)], [rest_bytes, body]


METHOD = "POST"


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


def _mapped() -> int:
    """Bytes of address space this process has mapped now (its VmSize)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # pragma: no cover - not Linux
        return 1 << 30


def main(argv: list[str]) -> int:
    (time_limit, memory_limit, cache_size, deadline, progress_fd, process_memory, max_output,
     address_space) = argv  # fmt: skip
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
        sandbox = Sandbox(
            float(time_limit),
            int(memory_limit),
            int(cache_size),
            arm,
            process_memory=int(process_memory),
            max_output=int(max_output),
        )
    except ImportError as exc:
        out.write(encode_frame({"ready": False, "error": str(exc)}, []))
        out.flush()
        return 1
    if int(address_space) > 0:  # after the imports: what scripts may make it map beyond
        cap = _mapped() + int(address_space)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    out.write(encode_frame({"ready": True}, []))
    out.flush()
    while (frame := read_frame(source)) is not None:
        header, blob = frame
        results, outputs = sandbox.batch(header, blob, progress, budget=float(time_limit))
        signal.setitimer(signal.ITIMER_REAL, 0)
        progress(-1)
        out.write(encode_frame({"results": results}, outputs))
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
