"""Start the real ``tidings`` command in a subprocess, bounded in time."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx

TIDINGS = [sys.executable, "-m", "tidings.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tidings_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env.update(
        TIDINGS_DATA_DIR=str(data_dir),
        TIDINGS_ENV="development",
        TIDINGS_RETRY_BASE_DELAY="0.05",
        TIDINGS_RETRY_MAX_DELAY="0.2",
        TIDINGS_DISPATCHER_POLL_INTERVAL="0.05",
        **extra,
    )
    return env


def wait_or_kill(proc: subprocess.Popen[Any], seconds: float) -> int:
    """Give ``proc`` (asked to stop) ``seconds`` to exit, then kill it; its exit code."""
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=10)


def run_cli(args: list[str], env: Mapping[str, str]) -> str:
    done = subprocess.run(
        [*TIDINGS, *args], env=dict(env), capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


def create_key(env: Mapping[str, str], tenant: str = "acme", scope: str = "admin") -> str:
    return run_cli(["keys", "create", "--tenant", tenant, "--scope", scope], env).splitlines()[-1]


class Process:
    def __init__(
        self, args: list[str], env: Mapping[str, str], log: Path, *, new_session: bool = False
    ) -> None:
        """``new_session``: in a process group of its own, as a terminal's Ctrl+C or
        systemd's stop signals it (``os.killpg``)."""
        self.log = log
        self._log_file = log.open("ab")
        self.proc = subprocess.Popen(
            [*TIDINGS, *args],
            env=dict(env),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            wait_or_kill(self.proc, 20)
        self._log_file.close()
        return self.proc.returncode


def serve_on_free_port(env: Mapping[str, str], log: Path) -> tuple[str, Process]:
    """``tidings serve`` started on a free port: (base URL, process). It answers once
    ``wait_until_serving`` returns."""
    port = free_port()
    return f"http://127.0.0.1:{port}", Process(["serve", "--port", str(port)], env, log)


async def wait_until_serving(base_url: str, process: Process, timeout: float = 30.0) -> None:
    """Poll /healthz until the server answers (there is no event to await across processes)."""
    async with httpx.AsyncClient() as client, asyncio.timeout(timeout):
        while True:
            if process.proc.poll() is not None:
                raise RuntimeError(f"server exited:\n{process.log.read_text()}")
            try:
                if (await client.get(f"{base_url}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def serving(env: Mapping[str, str], tmp_path: Path) -> AsyncIterator[tuple[str, Process]]:
    """``tidings serve`` on a free port until the block ends: yields (base URL, process).

    It must stop gracefully (uvicorn re-raises SIGTERM after a graceful shutdown) and log
    no traceback."""
    base, process = serve_on_free_port(env, tmp_path / "server.log")
    try:
        await wait_until_serving(base, process)
        yield base, process
    finally:
        assert process.stop() in (0, -signal.SIGTERM)
        assert "Traceback" not in process.log.read_text()
