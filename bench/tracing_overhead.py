"""What tracing costs when it is off: the emit path and the dispatcher's per-delivery path,
in process, with a sender that answers at once (no network), CPU time per event. On the
memory store (the default) there is no database either, so the glue's share is as large
as it can be; ``--store sqlite`` runs the production path of a single host.

Run: ``.venv/bin/python bench/tracing_overhead.py [--store memory|sqlite] [--baseline REF]``

Three builds run the same workload in one interpreter, in small interleaved batches, so
the load of a busy (shared) machine falls on all of them alike:

* ``baseline``: the source of ``--baseline`` (a git ref: the code before the tracing glue,
  ``183019d``, the first parent of its merge into main, by default), extracted with ``git
  archive`` and loaded as the package ``tidings_base``;
* ``off``: this checkout, tracing off (``Tidings.tracing`` is None, as without ``OTEL_*``);
* ``on``: this checkout, tracing on, spans batched to an exporter that drops them (the
  SDK's own cost, for scale).

Each round emits ``--batch`` events through ``Tidings.emit`` and delivers them through a
``Dispatcher`` (claim, sign, POST, judge, record), per build, the builds' order rotating.
Printed: CPU µs per event of each phase, and each build's total over the baseline's.

CPU time on a shared machine moves by a few per cent from run to run, more than the 1 %
this is meant to check; so it also counts the Python bytecode instructions each build
executes per event, in every thread (``sys.settrace`` opcode events; one round of
``--traced-batch`` events, in fresh worlds made once the counting is installed): a figure
the machine's load cannot move. Work done in C (JSON, hashing, SQLite itself) is not
counted, so the ratio overstates the glue's share of the time.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = {"name": "Ada", "plan": "pro", "seats": 12, "tags": ["a", "b"]}
BEFORE_TRACING = "183019d"
"""main just before the tracing glue was merged (the first parent of that merge)."""


def baseline_package(ref: str, into: Path) -> None:
    """``src/tidings`` at ``ref`` as the package ``tidings_base`` under ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "src/tidings"], capture_output=True, check=True
    ).stdout
    (into / "src.tar").write_bytes(archive)
    with tarfile.open(into / "src.tar") as tar:
        tar.extractall(into, filter="data")
    package = into / "tidings_base"
    (into / "src" / "tidings").rename(package)
    name = re.compile(r"\btidings(?=[.\s])(?!_)")  # tidings.x, "import tidings": not tidings_crm
    for path in package.rglob("*.py"):
        path.write_text(name.sub("tidings_base", path.read_text()))


class Counter:
    """Counts Python instructions, in every thread started after ``install``, while on."""

    def __init__(self) -> None:
        self.on = False
        self.count = 0
        self._lock = threading.Lock()

    def install(self) -> None:
        sys.settrace(self._trace)
        threading.settrace(self._trace)

    def uninstall(self) -> None:
        sys.settrace(None)
        threading.settrace(None)

    def _trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        if not self.on:
            return None if event == "call" else self._trace
        if event == "call":
            frame.f_trace_opcodes = True
        elif event == "opcode":
            with self._lock:
                self.count += 1
        return self._trace


class World:
    """One build's Tidings over a store (``memory`` or a SQLite file), with a sender that
    answers at once."""

    def __init__(self, package: str, traced: bool, store: str, directory: Path) -> None:
        from cryptography.fernet import Fernet

        def load(name: str) -> ModuleType:
            return importlib.import_module(f"{package}.{name}")

        settings_module, service, memory, factory, secretbox, deliveries = (
            load(n)
            for n in (
                "config",
                "service",
                "storage.memory",
                "storage.factory",
                "secretbox",
                "domain.deliveries",
            )
        )
        result = deliveries.AttemptResult(200, 1)
        world = self

        class Answered:
            async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Any:
                world.answered += 1
                if world.answered >= world.wanted:
                    world.all_answered.set()
                return result

            async def close(self) -> None:
                return None

        key = Fernet.generate_key().decode()
        url = f"sqlite:///{directory / (package + str(traced) + '.db')}"
        settings = settings_module.Settings(
            env="development", encryption_key=key, database_url=url, data_dir=directory
        )
        opened = memory.MemoryStore() if store == "memory" else factory.open_store(url)
        self.tidings = service.Tidings(settings, opened, secretbox.SecretBox([key]))
        self.tidings._sender = Answered()
        self.answered = 0
        self.wanted = 0
        self.all_answered = asyncio.Event()
        self.tenant = ""
        self.emit_s = 0.0
        self.deliver_s = 0.0
        self.events = 0
        if traced:
            self.tidings.tracing = _dropping_tracing()

    async def start(self) -> None:
        await self.tidings.store.migrate()
        tenant = await self.tidings.store.keys.ensure_tenant("bench")
        self.tenant = tenant.id
        await self.tidings.create_subscription(tenant.id, "http://receiver.invalid/h", ["*"])

    async def close(self) -> None:
        await self.tidings.store.close()

    async def round(self, batch: int) -> float:
        """Emit ``batch`` events, then deliver them; returns this round's CPU seconds."""
        started = time.process_time()
        for _ in range(batch):
            await self.tidings.emit(self.tenant, "client.created", PAYLOAD)
        emitted = time.process_time()
        self.wanted += batch
        self.all_answered.clear()
        stop = asyncio.Event()
        task = asyncio.create_task(self.tidings.dispatcher().run(stop))
        await self.all_answered.wait()
        stop.set()
        await task  # every outcome recorded
        delivered = time.process_time()
        self.emit_s += emitted - started
        self.deliver_s += delivered - emitted
        self.events += batch
        return delivered - started


def _dropping_tracing() -> Any:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from tidings.tracing.sdk import Tracing

    class Dropped(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropped()))
    return Tracing(provider)


BUILDS = {"baseline": ("tidings_base", False), "off": ("tidings", False), "on": ("tidings", True)}


async def count_instructions(store: str, directory: Path, batch: int) -> dict[str, int]:
    """Python instructions of one round per build, in fresh worlds (threads included)."""
    counter = Counter()
    counter.install()
    try:
        counts = {}
        for name, (package, traced) in BUILDS.items():
            (directory / f"count-{name}").mkdir(exist_ok=True)
            world = World(package, traced, store, directory / f"count-{name}")
            await world.start()
            await world.round(batch)  # warm up: the store's threads, caches
            counter.count, counter.on = 0, True
            await world.round(batch)
            counter.on = False
            counts[name] = counter.count
            await world.close()
        return counts
    finally:
        counter.uninstall()


async def measure(
    store: str, directory: Path, rounds: int, batch: int
) -> tuple[dict[str, World], dict[str, list[float]]]:
    worlds = {}
    for name, (package, traced) in BUILDS.items():
        worlds[name] = world = World(package, traced, store, directory)
        await world.start()
        await world.round(batch)  # warm up: imports, caches, the first dispatcher
        world.emit_s = world.deliver_s = 0.0
        world.events = 0
    per_round: dict[str, list[float]] = {name: [] for name in worlds}
    names = list(worlds)
    for number in range(rounds):
        shift = number % len(names)
        for name in names[shift:] + names[:shift]:
            per_round[name].append(await worlds[name].round(batch))
    for world in worlds.values():
        await world.close()
    return worlds, per_round


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--baseline", default=BEFORE_TRACING, help="git ref without the glue (default: %(default)s)"
    )
    parser.add_argument("--store", choices=("memory", "sqlite"), default="memory")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--traced-batch", type=int, default=50)
    args = parser.parse_args()
    ref = args.baseline
    from tidings.logs import configure_logging

    configure_logging(json_lines=True, level="info")  # as served: debug lines filtered out
    with tempfile.TemporaryDirectory() as tmp:
        baseline_package(ref, Path(tmp))
        sys.path.insert(0, tmp)
        worlds, per_round = asyncio.run(measure(args.store, Path(tmp), args.rounds, args.batch))
        opcodes = asyncio.run(count_instructions(args.store, Path(tmp), args.traced_batch))
    base = worlds["baseline"]
    print(
        f"{args.store} store, baseline {ref[:12]}; {args.rounds} rounds x {args.batch} events "
        "per build, interleaved; CPU µs per event"
    )
    for name, world in worlds.items():
        emit = world.emit_s / world.events * 1e6
        deliver = world.deliver_s / world.events * 1e6
        total = (world.emit_s + world.deliver_s) / (base.emit_s + base.deliver_s)
        pairs = [r / b for r, b in zip(per_round[name], per_round["baseline"], strict=True)]
        print(
            f"  {name:<8} emit {emit:6.1f}  deliver {deliver:6.1f}  "
            f"total/baseline {total:.3f}  (median of rounds {statistics.median(pairs):.3f})"
        )
    print(f"Python instructions per event, every thread (a round of {args.traced_batch}):")
    for name, count in opcodes.items():
        ratio = count / opcodes["baseline"]
        print(f"  {name:<8} {count / args.traced_batch:9.0f}  /baseline {ratio:.4f}")


if __name__ == "__main__":
    main()
