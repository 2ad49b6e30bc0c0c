"""``tidings worker --processes N`` and ``tidings serve --workers N``: N dispatchers under
one command, kept running, none outliving it."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import eventually
from tests.support.processes import Process, free_port, tidings_env, wait_until_serving
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
    """Running (a zombie has exited: only its parent has yet to reap it)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def kill_survivors(pids: set[int]) -> list[int]:
    """SIGKILL what is still running of ``pids`` (no stray worker may go on claiming from
    a test database); returns those pids."""
    survivors = [pid for pid in pids if alive(pid)]
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    return survivors


async def both_delivering(group: Process) -> bool:
    return group.log.read_text().count("tidings worker: delivering") == 2


def worker_children(group: Process) -> set[int]:
    """The children of ``group`` that run ``tidings worker``."""
    return {pid for pid in children(group) if b"worker" in _arguments(pid)}


def _arguments(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []  # gone meanwhile


async def all_gone(pids: set[int]) -> None:
    """Wait until none of ``pids`` runs any more."""

    async def gone() -> bool:
        return not any(alive(pid) for pid in pids)

    await eventually(gone, timeout=30)


async def emit_and_receive(
    tidings: Tidings, tenant_id: str, receiver: Receiver, numbers: range
) -> None:
    """Emit ``client.created`` for each of ``numbers`` (counted from 0 over the test) and
    wait until ``/p`` has received every event so far."""
    for n in numbers:
        await tidings.emit(tenant_id, "client.created", {"n": n})
    await receiver.wait_count("/p", numbers.stop, timeout=30)


async def kill_one_and_await_its_replacement(
    pids: set[int], running_now: Callable[[], set[int]]
) -> None:
    """SIGKILL the lowest of ``pids``; wait until ``running_now()`` counts as many again,
    the killed one not among them."""
    killed = min(pids)
    os.kill(killed, signal.SIGKILL)

    async def replaced() -> bool:
        now = running_now()
        return len(now) == len(pids) and killed not in now

    await eventually(replaced, timeout=30)


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
        await eventually(lambda: both_delivering(group), timeout=60)
        first = children(group)
        assert len(first) == 2
        await emit_and_receive(tidings, key.tenant_id, receiver, range(10))
        await kill_one_and_await_its_replacement(first, lambda: children(group))
        await emit_and_receive(tidings, key.tenant_id, receiver, range(10, 20))
        assert "worker_process_exited" in group.log.read_text()
    finally:
        running = children(group)
        assert group.stop() == 0, group.log.read_text()
        assert not kill_survivors(running), "a child outlived the group"
        await tidings.close()


async def test_no_child_outlives_a_killed_group(tmp_path: Path) -> None:
    """The parent SIGKILLed (it can pass nothing on): the kernel stops its children."""
    env = tidings_env(tmp_path / "data", TIDINGS_DATABASE_URL=f"sqlite:///{tmp_path / 't.db'}")
    group = Process(["worker", "--processes", "2"], env, tmp_path / "workers.log")
    running: set[int] = set()
    try:
        await eventually(lambda: both_delivering(group), timeout=60)
        running = children(group)
        assert len(running) == 2
        group.kill()
        await all_gone(running)
    finally:
        group.stop()
        kill_survivors(running)


def serve_with_a_worker(tmp_path: Path, *, new_session: bool = False) -> tuple[str, Process]:
    """``serve --workers 1`` on SQLite: the API's own process dispatches nothing, so only
    the worker beside it can deliver: (base URL, process)."""
    env = tidings_env(tmp_path / "data", TIDINGS_DATABASE_URL=f"sqlite:///{tmp_path / 't.db'}")
    port = free_port()
    args = ["serve", "--port", str(port), "--workers", "1"]
    return f"http://127.0.0.1:{port}", Process(
        args, env, tmp_path / "serve.log", new_session=new_session
    )


async def one_worker_delivering(base: str, serve: Process) -> set[int]:
    await wait_until_serving(base, serve)
    await eventually(lambda: _logged(serve, "tidings worker: delivering"), timeout=60)
    running = worker_children(serve)
    assert len(running) == 1
    return running


async def test_serve_runs_workers_beside_the_api_and_stops_them_with_it(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Only the worker can deliver; one SIGKILLed is replaced and delivers. SIGTERM to
    ``serve`` stops the worker too, and ``serve`` waits for it: when ``serve`` has exited
    the worker is gone, not left to stop on its own."""
    base, serve = serve_with_a_worker(tmp_path)
    tidings = Tidings.from_settings(
        Settings(
            data_dir=tmp_path / "data",
            env="development",
            database_url=f"sqlite:///{tmp_path / 't.db'}",
        )
    )
    running: set[int] = set()
    try:
        running = await one_worker_delivering(base, serve)
        assert serve.log.read_text().count("collector_settled") == 2  # serve's and the worker's
        key, _ = await tidings.create_api_key("acme", ["admin"])
        await tidings.create_subscription(key.tenant_id, receiver.url("/p"), ["client.created"])
        await emit_and_receive(tidings, key.tenant_id, receiver, range(5))
        await kill_one_and_await_its_replacement(running, lambda: worker_children(serve))
        running = worker_children(serve)
        await emit_and_receive(tidings, key.tenant_id, receiver, range(5, 10))
    finally:
        code = serve.stop()
        outlived = [pid for pid in running if alive(pid)]
        kill_survivors(running)
        await tidings.close()
    assert code in (0, -signal.SIGTERM), serve.log.read_text()
    assert not outlived, "serve exited before its worker"
    assert "Traceback" not in serve.log.read_text()


async def test_ctrl_c_stops_serve_and_its_workers_without_restarting_them(
    tmp_path: Path,
) -> None:
    """SIGINT to the whole process group, as a terminal's Ctrl+C sends it: the worker gets
    it too and stops by itself; that is no crash to restart it after."""
    base, serve = serve_with_a_worker(tmp_path, new_session=True)
    running: set[int] = set()
    try:
        running = await one_worker_delivering(base, serve)
        os.killpg(serve.proc.pid, signal.SIGINT)
        serve.proc.wait(timeout=30)
        outlived = [pid for pid in running if alive(pid)]
    finally:
        serve.stop()
        kill_survivors(running)
    assert not outlived, "serve exited before its worker"
    log = serve.log.read_text()
    assert "worker_process_exited" not in log
    assert log.count("worker_process_started") == 1


async def test_no_worker_outlives_a_killed_serve(tmp_path: Path) -> None:
    """``serve`` SIGKILLed: the kernel stops its worker (the parent-death signal is tied
    to the thread that started it, which lives as long as ``serve``)."""
    base, serve = serve_with_a_worker(tmp_path)
    running: set[int] = set()
    try:
        running = await one_worker_delivering(base, serve)
        serve.kill()
        await all_gone(running)
    finally:
        serve.stop()
        kill_survivors(running)


async def _logged(process: Process, line: str) -> bool:
    return line in process.log.read_text()
