"""The baseline tidings is compared against: a Celery worker with Redis and ``requests``.

Run: ``.venv/bin/python bench/celery_baseline.py --url http://127.0.0.1:PORT/hook --total 2000``
(needs ``redis-server`` on PATH and the ``celery redis requests psutil`` packages).

It starts a throwaway redis-server (free 127.0.0.1 port, temp dir, persistence off) and a
prefork Celery worker running ``bench/celery_tasks.py``, enqueues ``total`` deliveries,
waits until each has a final outcome, and stops both. Every step shares one deadline,
and both processes are killed by process group even when something fails.

Figures: deliveries/s from the first enqueue to the last completed POST; latency
percentiles from enqueue to POST completion (measured in the task, reported through a
Redis list); the peak RSS of the worker tree, sampled while it runs (RSS sums count the
pages prefork children share with their parent once per process).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import IO, Any

import psutil
import redis
from celery import Celery

from tidings.domain.signatures import generate_secret

ROOT = Path(__file__).resolve().parent.parent
TASK_NAME = "bench.deliver"  # bench.celery_tasks.TASK_NAME; the driver never imports it
RESULTS_KEY = "bench:results"
POLL_S = 0.05


class Deadline:
    """One time budget shared by every step, so the whole run is bounded."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def check(self, what: str) -> None:
        if self.left() <= 0:
            raise TimeoutError(f"celery baseline timed out while {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM the process group (Celery's warm shutdown), then SIGKILL whatever is left."""
    _signal_group(proc.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    _signal_group(proc.pid, signal.SIGKILL)  # also reaches children the leader left behind
    proc.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pgid, sig)


@contextmanager
def spawned(argv: list[str], log: IO[bytes], **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A child in its own session (so its whole tree can be signalled), always stopped."""
    proc = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kwargs
    )
    try:
        yield proc
    finally:
        stop_group(proc)


def start_redis(stack: ExitStack, workdir: Path, deadline: Deadline) -> str:
    """A private redis-server: loopback only, no RDB snapshots, no AOF; returns its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found on PATH (apt-get install redis-server)")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)]
    argv += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
    log = stack.enter_context((workdir / "redis.log").open("wb"))
    proc = stack.enter_context(spawned(argv, log))
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    while not _answers(client):
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited: {_tail(workdir / 'redis.log')}")
        deadline.check("starting redis-server")
        time.sleep(POLL_S)
    return url


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def start_worker(
    stack: ExitStack, workdir: Path, broker: str, concurrency: int
) -> subprocess.Popen[bytes]:
    """``celery -A bench.celery_tasks worker`` from the repo root, prefork pool."""
    pythonpath = [str(ROOT), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "BENCH_CELERY_BROKER": broker, "PYTHONPATH": os.pathsep.join(pythonpath)}
    argv = [sys.executable, "-m", "celery", "-A", "bench.celery_tasks", "worker"]
    argv += ["--pool=prefork", f"--concurrency={concurrency}", "--loglevel=WARNING"]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    log = stack.enter_context((workdir / "worker.log").open("wb"))
    return stack.enter_context(spawned(argv, log, cwd=ROOT, env=env))


def wait_worker_ready(
    app: Celery, worker: subprocess.Popen[bytes], workdir: Path, deadline: Deadline
) -> None:
    """Enqueue only once the worker answers, so its start-up is not counted as latency."""
    while not app.control.ping(timeout=0.5):
        if worker.poll() is not None:
            raise RuntimeError(f"celery worker exited: {_tail(workdir / 'worker.log')}")
        deadline.check("starting the celery worker")


def enqueue(app: Celery, url: str, total: int) -> float:
    """Send ``total`` delivery tasks; returns the wall-clock time of the first."""
    secret = generate_secret()
    first = time.time()
    for i in range(total):
        args = [url, secret, f"evt_{i:08d}", {"clientId": f"cli_{i}"}, time.time(), RESULTS_KEY]
        app.send_task(TASK_NAME, args=args)
    return first


def tree_rss_mb(proc: psutil.Process) -> float:
    """RSS of a process and all its descendants, in MiB (0 for vanished processes)."""
    total = 0
    try:
        members = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0.0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.Error:  # exited or unreadable between listing and reading
            continue
    return total / 2**20


def wait_outcomes(
    client: redis.Redis,
    worker: subprocess.Popen[bytes],
    total: int,
    workdir: Path,
    deadline: Deadline,
) -> float:
    """Poll until every task reported, sampling the worker tree; returns peak RSS (MiB)."""
    watched = psutil.Process(worker.pid)
    peak = tree_rss_mb(watched)
    while int(client.llen(RESULTS_KEY)) < total:
        if worker.poll() is not None:
            raise RuntimeError(f"celery worker exited: {_tail(workdir / 'worker.log')}")
        deadline.check(f"waiting for {total} deliveries ({client.llen(RESULTS_KEY)} done)")
        peak = max(peak, tree_rss_mb(watched))
        time.sleep(POLL_S)
    return peak


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (NaN when empty)."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize(raw: list[bytes | str], first_enqueue: float, peak_rss_mb: float) -> dict[str, float]:
    """Throughput over the delivered ones, latency percentiles, failures, peak RSS."""
    outcomes = [json.loads(item) for item in raw]
    delivered = [o for o in outcomes if o["ok"]]
    latencies = sorted((o["done"] - o["enqueued"]) * 1000 for o in delivered)
    elapsed = max((o["done"] for o in delivered), default=first_enqueue) - first_enqueue
    return {
        "deliveries_per_s": len(delivered) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
        "worker_rss_mb": peak_rss_mb,
        "failed": float(len(outcomes) - len(delivered)),
    }


def run_celery_baseline(
    url: str, total: int, concurrency: int = 8, timeout_s: float = 300
) -> dict[str, float]:
    """Start a throwaway redis-server on a free 127.0.0.1 port (a temp dir, no persistence),
    start a Celery worker subprocess (prefork pool, --concurrency=concurrency) against it,
    enqueue `total` delivery tasks, wait until all are done, stop both, and return
    {"deliveries_per_s", "p50_ms", "p95_ms", "p99_ms", "worker_rss_mb", "failed"}, where
    worker_rss_mb is the peak RSS of the worker process tree, sampled every 50 ms.
    """
    deadline = Deadline(timeout_s)
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="celery-bench-")))
        broker = start_redis(stack, workdir, deadline)
        app = Celery("bench-client", broker=broker)
        app.conf.broker_connection_retry_on_startup = True
        stack.callback(app.close)
        worker = start_worker(stack, workdir, broker, concurrency)
        wait_worker_ready(app, worker, workdir, deadline)
        client = redis.Redis.from_url(broker)
        stack.callback(client.close)
        first = enqueue(app, url, total)
        peak = wait_outcomes(client, worker, total, workdir, deadline)
        figures = summarize(client.lrange(RESULTS_KEY, 0, -1), first, peak)
    return figures


def _tail(path: Path, limit: int = 2000) -> str:
    return path.read_text(errors="replace")[-limit:] if path.exists() else "(no log)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="receiver URL on 127.0.0.1")
    parser.add_argument("--total", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    figures = run_celery_baseline(args.url, args.total, args.concurrency, args.timeout)
    for name, value in figures.items():
        print(f"{name:18} {value:10.1f}")


if __name__ == "__main__":
    main()
