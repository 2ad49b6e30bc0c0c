"""A PostgreSQL primary fails over mid-stream, and nothing acknowledged is lost.

Patroni runs two nodes (synchronous replication) with etcd, on loopback; an API process
and two workers use the multi-host URL (``target_session_attrs=read-write``). The
primary's postmaster is killed with SIGKILL while emits stream in; Patroni promotes the
replica. Afterwards every acknowledged event has arrived, emits in the gap got 503 with
``Retry-After``, no process was restarted by hand, and delivery resumed within 10 s of
the promotion. It prints acknowledged, delivered, lost, duplicated and the resume time.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import patroni
from tests.support.processes import Process, create_key, free_port, tidings_env, wait_until_serving
from tests.support.receiver import Receiver
from tests.support.streams import Stream, check_outcome, started, subscribe

pytestmark = pytest.mark.asyncio

RESUME_WITHIN = 10.0
"""Seconds from the promotion to the first delivery after it (the issue's bound)."""


@pytest.fixture
def cluster() -> Iterator[patroni.PatroniCluster]:
    if not patroni.available():
        if os.environ.get("CI"):
            pytest.fail("Patroni and etcd are required in CI (apt-get install patroni etcd-server)")
        pytest.skip("Patroni and etcd are not installed")
    with patroni.patroni_cluster() as running:
        subprocess.run(
            ["psql", running.url("postgres"), "-qc", "CREATE DATABASE tidings"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        yield running


async def test_a_primary_failover_loses_nothing_acknowledged(
    cluster: patroni.PatroniCluster, tmp_path: Path, receiver: Receiver
) -> None:
    primary = cluster.primary()
    env = tidings_env(tmp_path / "data", TIDINGS_DATABASE_URL=cluster.url("tidings"))
    key = create_key(env)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api_env = {**env, "TIDINGS_DISPATCHER_ENABLED": "false"}
    api = Process(["serve", "--port", str(port)], api_env, tmp_path / "api.log")
    workers = [Process(["worker"], env, tmp_path / f"worker{n}.log") for n in range(2)]
    async with started([api, *workers]):
        await wait_until_serving(base, api)
        await subscribe(base, key, receiver.url("/chaos"))
        stream = Stream()
        emitting = asyncio.create_task(stream.run(base, key, 120))
        await asyncio.sleep(3)
        primary.kill_postmaster()
        replica = next(node for node in cluster.nodes if node is not primary)
        await asyncio.to_thread(
            cluster.wait_for, lambda: replica.role_is("primary"), 60, "promotion"
        )
        promoted = time.monotonic()
        await asyncio.sleep(RESUME_WITHIN)  # emits go on past the bound, however slow CI is
        stream.stop()
        await emitting
        await check_outcome(stream, receiver, promoted, [api, *workers], "PG failover")
    after = [r.at for r in receiver.at("/chaos") if r.at >= promoted]
    assert after, "nothing was delivered after the promotion"
    resumed = min(after) - promoted
    assert resumed < RESUME_WITHIN, f"delivery resumed {resumed:.1f} s after the promotion"
