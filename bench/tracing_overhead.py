"""What tracing costs when it is off: the emit path and the dispatcher's per-delivery path,
in process (memory store, a sender that answers at once: no network, no database, so the
glue's share is as large as it can be), CPU time per event.

Run: ``.venv/bin/python bench/tracing_overhead.py [--baseline REF] [--events 3000]``

Three builds of the same workload, each in a fresh interpreter, interleaved for
``--rounds`` rounds (the machine's noise falls on all of them alike):

* ``baseline``: the source of ``--baseline`` (a git ref, extracted with ``git archive``;
  default: where this branch left ``main``), the code before the tracing glue;
* ``off``: this checkout, tracing off (no ``OTEL_*``: ``Tidings.tracing`` is None);
* ``on``: this checkout, tracing on, spans batched to an exporter that drops them (the
  SDK's own cost, for scale).

Printed: CPU µs per event of each phase (best and median run), and the ratios to the
baseline as the median of each round's own ratio (runs next to each other in time share
the machine's load: on a busy machine that pairing is what makes a 1 % difference
visible at all).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def child(events: int, traced: bool) -> dict[str, float]:
    """The workload, in this interpreter's ``tidings`` (whichever PYTHONPATH chose)."""
    from cryptography.fernet import Fernet

    from tidings.config import Settings
    from tidings.domain.deliveries import AttemptResult
    from tidings.secretbox import SecretBox
    from tidings.service import Tidings
    from tidings.storage.memory import MemoryStore

    all_answered = asyncio.Event()

    class Answered:
        count = 0

        async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> AttemptResult:
            Answered.count += 1
            if Answered.count == events:
                all_answered.set()
            return AttemptResult(200, 1)

        async def close(self) -> None:
            return None

    key = Fernet.generate_key().decode()
    settings = Settings(env="development", encryption_key=key, dispatcher_poll_interval=0.05)
    tidings = Tidings(settings, MemoryStore(), SecretBox([key]))
    tidings._sender = Answered()
    if traced:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        from tidings.tracing.sdk import Tracing

        class Dropped(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Dropped()))
        tidings.tracing = Tracing(provider)  # type: ignore[attr-defined,unused-ignore]

    async def run() -> dict[str, float]:
        tenant = await tidings.store.keys.ensure_tenant("bench")
        await tidings.create_subscription(tenant.id, "http://receiver.invalid/hook", ["*"])
        payload = {"name": "Ada", "plan": "pro", "seats": 12}
        started = time.process_time()
        for _ in range(events):
            await tidings.emit(tenant.id, "client.created", payload)
        emitted = time.process_time() - started

        stop = asyncio.Event()
        dispatcher = tidings.dispatcher()
        started = time.process_time()
        task = asyncio.create_task(dispatcher.run(stop))
        await all_answered.wait()
        stop.set()
        await task  # every outcome recorded
        delivered = time.process_time() - started
        return {"emit": emitted / events * 1e6, "deliver": delivered / events * 1e6}

    return asyncio.run(run())


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def baseline_source(ref: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "src"], capture_output=True, check=True
    ).stdout
    tar_path = into / "src.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def measure(src: Path, events: int, traced: bool) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TIDINGS_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(src), str(ROOT)])
    args = [sys.executable, __file__, "--child", "--events", str(events)]
    done = subprocess.run(
        [*args, *(["--traced"] if traced else [])],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="git ref without the glue (default: merge-base)")
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.events, args.traced)))
        return
    ref = args.baseline or git("merge-base", "HEAD", "main")
    print(f"baseline {ref[:12]}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        builds = {
            "baseline": (baseline_source(ref, Path(tmp)), False),
            "off": (ROOT / "src", False),
            "on": (ROOT / "src", True),
        }
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in builds}
        names = list(builds)
        for round_ in range(args.rounds):
            shift = round_ % len(names)  # each build takes each place in the order
            for name in names[shift:] + names[:shift]:
                src, traced = builds[name]
                runs[name].append(measure(src, args.events, traced))
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
    report(runs, args.events)


def report(runs: dict[str, list[dict[str, float]]], events: int) -> None:
    rounds = len(runs["baseline"])
    print(f"{events} events x {rounds} rounds; CPU µs per event: best (median)")
    for name, results in runs.items():
        cells = []
        for phase in ("emit", "deliver"):
            values = [r[phase] for r in results]
            cells.append(f"{phase} {min(values):7.1f} ({statistics.median(values):7.1f})")
        print(f"  {name:<8} " + "   ".join(cells))
    for phase in ("emit", "deliver", "total"):

        def value(r: dict[str, float], phase: str = phase) -> float:
            return r["emit"] + r["deliver"] if phase == "total" else r[phase]

        ratios = {
            n: sorted(value(r) / value(b) for r, b in zip(runs[n], runs["baseline"], strict=True))
            for n in ("off", "on")
        }
        quartiles = statistics.quantiles(ratios["off"], n=4)
        print(
            f"  {phase:<8} off/baseline {statistics.median(ratios['off']):.3f}"
            f" (quartiles {quartiles[0]:.3f}-{quartiles[2]:.3f})"
            f"   on/baseline {statistics.median(ratios['on']):.3f}"
        )


if __name__ == "__main__":
    main()
