"""What one JavaScript transformation costs, per engine and per way of calling it.

Run: ``.venv/bin/python bench/transform.py [--calls 5000] [--tenants 10] [--workers 2]``.

The script is a typical one (reshape + one conditional): a Slack message ``{text}`` for a
payment of at least $1,000, else cancel; the input is the example CRM's sample
``payment.succeeded`` payload (tidings_crm) in an envelope in Svix's webhook shape, as
JSON text around the envelope body the dispatcher already has (``webhook_text``). Rows,
in µs per call (wall time; a ratio to the first row):

* ``quickjs in-process``: what a pool process does per job (tidings' sandbox: the
  tenant's compiled context, JSON in, JSON out) plus the parent's judging of the answer
  and printing the body to send (every row pays for those),
  with no process boundary: the floor, and what running QuickJS in the server would cost
  (were it not for the GIL it holds and the loops its time limit cannot stop);
* ``pool, one at a time``: ``TransformEngine.run`` awaited call after call: a pipe round
  trip per call (the latency a lone delivery sees);
* ``pool, N in flight``: N runs awaited together, as a busy dispatcher does: jobs that
  arrive while a process is busy share its next frame, so the round trip is spread;
  ``parent CPU`` is what the server process itself spends per call (its event loop is
  what deliveries share);
* ``mini-racer (V8) in-process`` and ``mini-racer, 2 threads``: V8 through py_mini_racer,
  one context per thread, with its per-call timeout.

Then the pool's memory: the resident size of its processes after ``--tenants`` scripts were
compiled in each. The IPC figures are derived: pool one at a time minus in-process is the
round trip; pool in flight minus in-process is the round trip's share per call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src")]

from tidings.domain.js_json import compact_json  # noqa: E402
from tidings.transform import Cancelled, Transformed, TransformEngine, webhook_text  # noqa: E402
from tidings.transform._worker import Sandbox, judge  # noqa: E402
from tidings.transform.engine import script_key  # noqa: E402
from tidings_crm.event_types import PAYMENT_SUCCEEDED  # noqa: E402

SCRIPT = """
function handler(webhook) {
  const payment = webhook.payload.payload;
  if (payment.amount.amount >= 100000) {
    const dollars = (payment.amount.amount / 100).toFixed(2);
    const amount = `${dollars} ${payment.amount.currency}`;
    webhook.payload = {text: `:moneybag: ${payment.clientId} paid ${amount} by ${payment.method}`};
  } else {
    webhook.cancel = true;
  }
  return webhook;
}
"""
ENVELOPE = {
    "id": "evt_01KH4C2W7N8B3K9YQ6TR5XGM1D",
    "type": PAYMENT_SUCCEEDED.name,
    "createdUtc": "2026-02-10T16:04:52Z",
    "companyId": "ten_01KFZ3M8Q2D7W4XG5RVN6TC9HB",
    "payload": PAYMENT_SUCCEEDED.sample,
    "metadata": {},
}
URL = "https://hooks.slack.example/services/T000/B000/XXXX"
WEBHOOK = webhook_text(URL, ENVELOPE["type"], compact_json(ENVELOPE))
"""As the dispatcher will pass it: JSON text around the body it already has."""
TIME_LIMIT = 0.05
MEMORY_LIMIT = 32 * 1024 * 1024
MAX_OUTPUT = 1024 * 1024


def per_call(run: Callable[[], None], calls: int, repeat: int = 5) -> float:
    """µs per call: the median of ``repeat`` rounds of ``calls`` calls."""
    rounds = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(calls):
            run()
        rounds.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(rounds)


def in_process(calls: int) -> float:
    sandbox = Sandbox(TIME_LIMIT, MEMORY_LIMIT, 256)
    key = script_key("ten_1", SCRIPT)

    def run() -> None:
        sendable(outcome(sandbox.run(key, SCRIPT, WEBHOOK)))

    return per_call(run, calls)


def outcome(judged: tuple[list[Any], list[bytes]]) -> Transformed | Cancelled:
    """What the engine makes of a sandbox's answer (the result and its blobs)."""
    result, blobs = judged
    assert result[0] == "ok", result
    cancel, url = result[1], result[2]
    rest, body = (blob.decode() for blob in blobs)
    return Cancelled(rest, body) if cancel else Transformed(url, body, rest)


def sendable(done: object) -> str:
    """The bytes to sign and send: every row pays for them."""
    assert isinstance(done, Transformed), done
    return done.body


def mini_racer_function() -> Callable[[str], Any]:
    from py_mini_racer import MiniRacer

    racer = MiniRacer()
    racer.eval(SCRIPT)
    racer.eval("function __run(text) { return JSON.stringify(handler(JSON.parse(text))) }")
    function = racer.eval("__run")

    def call(text: str) -> Any:
        return function(text, timeout_sec=TIME_LIMIT)

    call.racer = racer  # type: ignore[attr-defined]  # keep the isolate alive
    return call


def mini_racer(calls: int) -> float:
    call = mini_racer_function()
    return per_call(lambda: sendable(outcome(judge(call(WEBHOOK), MAX_OUTPUT))), calls)


def mini_racer_threads(calls: int, threads: int) -> float:
    local = threading.local()

    def one(_: int) -> None:
        if not hasattr(local, "call"):
            local.call = mini_racer_function()
        sendable(outcome(judge(local.call(WEBHOOK), MAX_OUTPUT)))

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(threads * 4)))  # warm each thread's context
        rounds = []
        for _ in range(3):
            start = time.perf_counter()
            list(pool.map(one, range(calls)))
            rounds.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(rounds)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def pool(calls: int, tenants: int, workers: int, in_flight: int) -> dict[str, float]:
    engine = TransformEngine(workers=workers, time_limit=TIME_LIMIT, memory_limit=MEMORY_LIMIT)
    try:
        names = [f"ten_{index}" for index in range(tenants)]
        await asyncio.gather(*(engine.run(name, SCRIPT, WEBHOOK) for name in names * workers * 4))
        one_by_one = []
        for _ in range(3):
            start = time.perf_counter()
            for index in range(min(calls, 2000)):
                sendable(await engine.run(names[index % tenants], SCRIPT, WEBHOOK))
            one_by_one.append((time.perf_counter() - start) / min(calls, 2000) * 1e6)
        wall, cpu = [], []
        for _ in range(3):
            start, start_cpu = time.perf_counter(), time.process_time()
            for offset in range(0, calls, in_flight):
                batch = range(offset, min(calls, offset + in_flight))
                outcomes = await asyncio.gather(
                    *(engine.run(names[index % tenants], SCRIPT, WEBHOOK) for index in batch)
                )
                for outcome in outcomes:
                    sendable(outcome)
            wall.append((time.perf_counter() - start) / calls * 1e6)
            cpu.append((time.process_time() - start_cpu) / calls * 1e6)
        rss = sum(rss_kib(pid) for pid in engine.pids())
        return {
            "one": statistics.median(one_by_one),
            "flight": statistics.median(wall),
            "cpu": statistics.median(cpu),
            "rss": rss / 1024,
            "processes": len(engine.pids()),
        }
    finally:
        await engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--in-flight", type=int, default=500)
    args = parser.parse_args()
    rows: list[tuple[str, float, str]] = []
    base = in_process(args.calls)
    rows.append(("quickjs in-process (floor)", base, ""))
    figures = asyncio.run(pool(args.calls, args.tenants, args.workers, args.in_flight))
    rows.append(("pool, one at a time", figures["one"], "a pipe round trip each"))
    rows.append(
        (
            f"pool, {args.in_flight} in flight",
            figures["flight"],
            f"parent CPU {figures['cpu']:.0f} µs/call",
        )
    )
    try:
        rows.append(("mini-racer (V8) in-process", mini_racer(min(args.calls, 2000)), ""))
        rows.append(("mini-racer, 2 threads", mini_racer_threads(min(args.calls, 2000), 2), ""))
    except ImportError:
        rows.append(("mini-racer", float("nan"), "not installed (pip install mini-racer)"))
    print(f"{'engine':32} {'µs/call':>9} {'x floor':>8}  note")
    for name, micros, note in rows:
        print(f"{name:32} {micros:9.1f} {micros / base:8.2f}  {note}")
    print(
        f"\nIPC: round trip {figures['one'] - base:.0f} µs; its share per call with "
        f"{args.in_flight} in flight {figures['flight'] - base:.0f} µs"
    )
    print(
        f"pool memory: {figures['processes']:.0f} processes, {figures['rss']:.1f} MiB resident "
        f"with {args.tenants} tenants' scripts compiled in each"
    )
    print(json.dumps({name: round(micros, 1) for name, micros, _ in rows}))


if __name__ == "__main__":
    main()
