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

Printed: the best (least disturbed) CPU µs per event of each phase, and off / baseline.
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

    class Answered:
        async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> AttemptResult:
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
        while (await tidings.store.queue.delivery_counts()).get("succeeded", 0) < events:
            await asyncio.sleep(0.005)
        delivered = time.process_time() - started
        stop.set()
        await task
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
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=7)
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
        for round_ in range(args.rounds):
            for name, (src, traced) in builds.items():
                runs[name].append(measure(src, args.events, traced))
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
    print(f"{args.events} events x {args.rounds} rounds; CPU µs per event (best, median)")
    best: dict[str, dict[str, float]] = {}
    for name, results in runs.items():
        best[name] = {p: min(r[p] for r in results) for p in ("emit", "deliver")}
        medians = {p: statistics.median(r[p] for r in results) for p in ("emit", "deliver")}
        print(
            f"  {name:<8} emit {best[name]['emit']:7.1f} ({medians['emit']:7.1f})"
            f"   deliver {best[name]['deliver']:7.1f} ({medians['deliver']:7.1f})"
        )
    for phase in ("emit", "deliver"):
        off = best["off"][phase] / best["baseline"][phase]
        on = best["on"][phase] / best["baseline"][phase]
        print(f"  {phase:<8} off/baseline {off:.3f}   on/baseline {on:.3f}")
    total = {n: best[n]["emit"] + best[n]["deliver"] for n in best}
    print(f"  per event off/baseline {total['off'] / total['baseline']:.3f}")


if __name__ == "__main__":
    main()
