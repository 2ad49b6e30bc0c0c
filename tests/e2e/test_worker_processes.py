"""``tidings worker --processes N``: N dispatchers under one command, kept running."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.conftest import eventually
from tests.support.processes import Process, tidings_env
from tests.support.receiver import Receiver
from tidings.config import Settings
from tidings.service import Tidings

pytestmark = pytest.mark.asyncio


def children(group: Process) -> set[int]:
    """The live children of the group's process, from /proc (Linux)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = dict(
                line.split(":\t", 1) for line in (entry / "status").read_text().splitlines()
            )
        except (OSError, ValueError):
            continue  # gone meanwhile
        if status.get("PPid", "").strip() == str(group.proc.pid) and not status.get(
            "State", ""
        ).startswith("Z"):
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_worker_processes_share_the_work_and_one_killed_is_restarted(
    tmp_path: Path, receiver: Receiver, database_url: str
) -> None:
    data = tmp_path / "data"
    env = tidings_env(data, TIDINGS_DATABASE_URL=database_url)
    tidings = Tidings.from_settings(
        Settings(data_dir=data, env="development", database_url=database_url)
    )
    await tidings.store.migrate()
    key, _ = await tidings.create_api_key("acme", ["admin"])
    await tidings.create_subscription(key.tenant_id, receiver.url("/p"), ["client.created"])
    group = Process(["worker", "--processes", "2"], env, tmp_path / "workers.log")
    try:

        async def both_delivering() -> bool:
            return group.log.read_text().count("tidings worker: delivering") == 2

        await eventually(both_delivering, timeout=60)
        first = children(group)
        assert len(first) == 2
        for n in range(10):
            await tidings.emit(key.tenant_id, "client.created", {"n": n})
        await receiver.wait_count("/p", 10, timeout=30)

        os.kill(min(first), signal.SIGKILL)

        async def replaced() -> bool:
            now = children(group)
            return len(now) == 2 and min(first) not in now

        await eventually(replaced, timeout=30)
        for n in range(10, 20):
            await tidings.emit(key.tenant_id, "client.created", {"n": n})
        await receiver.wait_count("/p", 20, timeout=30)
        assert "worker_process_exited" in group.log.read_text()
    finally:
        running = children(group)
        assert group.stop() == 0, group.log.read_text()
        assert not [pid for pid in running if alive(pid)], "a child outlived the group"
        await tidings.close()
